"""What authentication costs on the hot path: RecordUsage through a server with BILLING_AUTH=off and
one with BILLING_AUTH=required (an API key per call), both on the same database, in the same run.

    BILLING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 dev.py run python bench/auth_overhead.py

The URL is an admin URL: a `billing_bench_*` database is created on it and dropped at the end. The two
servers are measured in alternating rounds, so a machine that slows down mid-run slows both; it prints
each round and the ratio of the medians (required / off).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import grpc
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.record_usage import Result, run_phase
from service.app.api_keys import create_key
from service.db.startup import apply_migrations
from tests.support.process import ServiceProcess


async def record_rate(
    target: str,
    metadata: tuple[tuple[str, str], ...],
    companies: list[str],
    args: argparse.Namespace,
    tag: str,
) -> Result:
    chans = [grpc.aio.insecure_channel(target) for _ in range(args.channels)]
    usage = [usage_service_pb2_grpc.UsageServiceStub(c) for c in chans]
    email = usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
    try:

        def call(n: int) -> object:
            return usage[n % args.channels].RecordUsage(
                usage_service_pb2.RecordUsageRequest(
                    company_id=companies[n % len(companies)], idempotency_key=f"{tag}-{n}", usage=email
                ),
                metadata=metadata,
            )

        return await run_phase(tag, call, args.in_flight, 500_000, args.seconds)  # type: ignore[arg-type]
    finally:
        for c in chans:
            await c.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wallets", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=4)
    args = parser.parse_args()
    admin_url = os.environ.get("BILLING_BENCH_DATABASE_URL")
    if not admin_url:
        sys.exit("set BILLING_BENCH_DATABASE_URL to an admin URL of a Postgres server")
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'create database "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    servers: list[ServiceProcess] = []
    try:
        await apply_migrations(url)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        assert pool is not None
        key = (await create_key(pool, "bench", "admin", None, "bench")).secret
        await pool.close()
        with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
            for auth in ("off", "required"):
                env = {"DATABASE_URL": url, "BILLING_AUTH": auth, "BILLING_LOG_LEVEL": "warning"}
                servers.append(ServiceProcess(env, Path(tmp) / f"server-{auth}.log"))
                servers[-1].start()
            for server in servers:
                await server.wait_serving()
            metadata = (("authorization", f"Bearer {key}"),)
            companies = [f"bench-{i}" for i in range(args.wallets)]
            async with grpc.aio.insecure_channel(servers[0].target) as channel:
                wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
                await asyncio.gather(
                    *(
                        wallets.CreateWallet(
                            wallet_service_pb2.CreateWalletRequest(company_id=c, display_name=c, request_id=c)
                        )
                        for c in companies
                    )
                )
            rates: dict[str, list[float]] = {"off": [], "required": []}
            for round_number in range(args.rounds):
                for server, auth in zip(servers, ("off", "required"), strict=True):
                    result = await record_rate(
                        server.target,
                        metadata if auth == "required" else (),
                        companies,
                        args,
                        f"{auth}-{round_number}",
                    )
                    rates[auth].append(result.events_per_s)
                    print(
                        f"round {round_number + 1} auth={auth:<8} {result.events_per_s:8.0f} RecordUsage/s   "
                        f"p50 {result.quantile_ms(0.5):6.2f} ms   p99 {result.quantile_ms(0.99):6.2f} ms",
                        flush=True,
                    )
            off, required = statistics.median(rates["off"]), statistics.median(rates["required"])
            print(
                f"\nmedian RecordUsage/s: auth=off {off:.0f}, auth=required {required:.0f}; "
                f"ratio {required / off:.3f}"
            )
    finally:
        for server in servers:
            server.kill_quietly()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
