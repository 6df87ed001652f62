"""Load generator for RecordUsage, run as its own process against a real server.

    python3 dev.py run python bench/record_usage.py                    # starts Postgres and a server here
    python3 dev.py run python bench/record_usage.py --quick --json out.json
    python3 dev.py run python bench/record_usage.py --target HOST:PORT [--database-url URL]
    python3 dev.py run python bench/record_usage.py --workers 1,2,4    # the phases for each server count

It measures, against the same server and the same Postgres in one run, each at --in-flight calls:
  * check                    the health Check: a unary RPC that does no work (the baseline);
  * unary_hot                RecordUsage on one hot wallet;
  * unary_spread             RecordUsage spread over 10,000 wallets;
  * batch100_hot             RecordUsageBatch of 100 usages on one hot wallet;
  * batch1000_hot            RecordUsageBatch of 1,000 usages on one hot wallet;
  * db_single_statement_hot  straight to Postgres with asyncpg: one single-statement debit transaction
                             per event on one hot row at --in-flight connections (no group commit: the
                             limit that only group commit can beat).
Each phase prints events/s, p50 and p99 of a call, and its rate as a ratio of Check's; --json PATH writes
the same figures. Every phase is bounded in calls and seconds and talks only to 127.0.0.1 (or --target).
The client is this one process; the server and Postgres are processes of their own.

With --workers, the phases run against `serve --workers N` for each N in turn (bench/servers.py), on one
database, and a last table gives each phase's rate as a ratio to the first count, with the cores available.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.pool import ensure_database, with_database
from tests.support.process import ServiceProcess

# The comparator's own database on the same Postgres, so that its hot row is not a wallet of ours.
COMPARATOR_DATABASE = "billing_bench_comparator"
CLIENT_PROCESSES = 1


@dataclass
class Result:
    name: str
    calls: int
    events_per_call: int
    seconds: float
    latencies_ms: list[float]

    @property
    def events_per_s(self) -> float:
        return self.calls * self.events_per_call / self.seconds

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def figures(self, baseline: Result | None) -> dict[str, float]:
        return {
            "events_per_s": round(self.events_per_s, 1),
            "p50_ms": round(self.quantile_ms(0.5), 3),
            "p99_ms": round(self.quantile_ms(0.99), 3),
            "ratio_to_check": round(self.events_per_s / baseline.events_per_s, 4) if baseline else 1.0,
            "calls": self.calls,
            "events_per_call": self.events_per_call,
        }


async def run_phase(
    name: str,
    call: Callable[[int], Awaitable[object]],
    in_flight: int,
    max_calls: int,
    max_seconds: float,
    events_per_call: int = 1,
) -> Result:
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal issued
        while issued < max_calls and time.perf_counter() < deadline:
            n = issued
            issued += 1
            t0 = time.perf_counter()
            await call(n)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return Result(name, len(latencies), events_per_call, time.perf_counter() - started, latencies)


def report(result: Result, baseline: Result | None) -> None:
    ratio = f"{result.events_per_s / baseline.events_per_s:6.3f} x Check" if baseline else "   (baseline)"
    print(
        f"{result.name:<40} {result.events_per_s:9.0f} events/s   p50 {result.quantile_ms(0.5):7.2f} ms"
        f"   p99 {result.quantile_ms(0.99):7.2f} ms   {ratio}   ({result.calls} calls)",
        flush=True,
    )


async def seed_wallets(database_url: str, prefix: str, count: int) -> None:
    """`count` companies with wallets, as CreateWallet makes them, in three statements."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                """
                insert into companies (company_id, display_name, create_request_id)
                select $1 || n, $1 || n, $1 || n from generate_series(0, $2 - 1) n
                """,
                prefix,
                count,
            )
            await conn.execute(
                "insert into wallets (company_id) select $1 || n from generate_series(0, $2 - 1) n",
                prefix,
                count,
            )
            await conn.execute(
                "insert into billing_settings (company_id) select $1 || n from generate_series(0, $2 - 1) n",
                prefix,
                count,
            )
    finally:
        await conn.close()


async def db_single_statement_phase(admin_url: str, in_flight: int, seconds: float) -> Result:
    """One single-statement debit transaction per event on one hot row, at `in_flight` connections."""
    await ensure_database(admin_url, COMPARATOR_DATABASE)
    url = with_database(admin_url, COMPARATOR_DATABASE)
    setup = await asyncpg.connect(url)
    try:
        await setup.execute(
            "create table if not exists hot_wallet (id int primary key, balance_nanos bigint not null)"
        )
        await setup.execute(
            "insert into hot_wallet values (1, 0) on conflict (id) do update set balance_nanos = 0"
        )
    finally:
        await setup.close()
    conns = await asyncio.gather(*(asyncpg.connect(url) for _ in range(in_flight)))
    try:
        free = list(conns)
        debit = "update hot_wallet set balance_nanos = balance_nanos - 675000 where id = 1"

        async def call(_n: int) -> None:
            conn = free.pop()
            try:
                await conn.execute(debit)
            finally:
                free.append(conn)

        return await run_phase("db: 1-statement debit, 1 hot row", call, in_flight, 10_000_000, seconds)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def bench(
    target: str,
    database_url: str | None,
    admin_url: str | None,
    in_flight: int,
    seconds: float,
    wallets: int,
    channels: int,
) -> dict[str, dict[str, float]]:
    # One TCP connection per channel (gRPC shares them between channels by default), so the load
    # spreads over the workers of `serve --workers N`, which the kernel assigns per connection.
    chans = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    usage = [usage_service_pb2_grpc.UsageServiceStub(c) for c in chans]
    wallet = [wallet_service_pb2_grpc.WalletServiceStub(c) for c in chans]
    health = [health_pb2_grpc.HealthStub(c) for c in chans]
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}-"
    phases: dict[str, dict[str, float]] = {}
    try:
        check = health_pb2.HealthCheckRequest()
        await run_phase("warm-up", lambda n: health[n % channels].Check(check), in_flight, 2000, 3)
        baseline = await run_phase(
            "health Check (no work)", lambda n: health[n % channels].Check(check), in_flight, 10**7, seconds
        )
        report(baseline, None)
        phases["check"] = baseline.figures(None)

        print(f"creating {wallets:,} wallets ...", flush=True)
        if database_url is not None:
            await seed_wallets(database_url, prefix, wallets)
        else:

            async def create(n: int) -> object:
                company = f"{prefix}{n}"
                return await wallet[n % channels].CreateWallet(
                    wallet_service_pb2.CreateWalletRequest(
                        company_id=company, display_name=company, request_id=company
                    )
                )

            created = await run_phase("CreateWallet", create, in_flight, wallets, 600)
            assert created.calls == wallets, "wallet creation did not finish in time"

        email = usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
        hot = f"{prefix}0"

        def unary(company_of: Callable[[int], str], tag: str) -> Callable[[int], Awaitable[object]]:
            def call(n: int) -> Awaitable[object]:
                return usage[n % channels].RecordUsage(
                    usage_service_pb2.RecordUsageRequest(
                        company_id=company_of(n), idempotency_key=f"{tag}-{n}", usage=email
                    )
                )

            return call

        def batch(size: int, tag: str) -> Callable[[int], Awaitable[object]]:
            async def call(n: int) -> object:
                request = usage_service_pb2.RecordUsageBatchRequest(
                    items=[
                        usage_service_pb2.RecordUsageRequest(
                            company_id=hot, idempotency_key=f"{tag}-{n}-{i}", usage=email
                        )
                        for i in range(size)
                    ]
                )
                reply = await usage[n % channels].RecordUsageBatch(request, timeout=60)
                failed = [r.error for r in reply.results if r.WhichOneof("result") != "recorded"]
                assert not failed, failed[0]
                return reply

            return call

        await run_phase("warm-up", unary(lambda n: hot, f"warm-{run}"), in_flight, 1000, 2)
        measured = [
            ("unary_hot", "RecordUsage, 1 hot wallet", unary(lambda n: hot, f"hot-{run}"), 1, in_flight),
            (
                "batch100_hot",
                "RecordUsageBatch of 100, 1 hot wallet",
                batch(100, f"b100-{run}"),
                100,
                in_flight,
            ),
            # 64 batches of 1,000 in flight would only queue up in the server: 8 keep it saturated.
            (
                "batch1000_hot",
                "RecordUsageBatch of 1,000, 1 hot wallet",
                batch(1000, f"b1000-{run}"),
                1000,
                min(in_flight, 8),
            ),
            # Last of the server phases: each of its wallets crosses below its minimum, and the recharge
            # loop's work on those crossings would weigh on any phase after it.
            (
                "unary_spread",
                f"RecordUsage, {wallets:,} wallets",
                unary(lambda n: f"{prefix}{n % wallets}", f"spread-{run}"),
                1,
                in_flight,
            ),
        ]
        results: dict[str, Result] = {}
        for key, label, call, per_call, depth in measured:
            result = await run_phase(label, call, depth, 10**7, seconds, events_per_call=per_call)
            report(result, baseline)
            phases[key] = result.figures(baseline)
            results[key] = result
        if admin_url is not None:
            db = await db_single_statement_phase(admin_url, in_flight, seconds)
            report(db, baseline)
            phases["db_single_statement_hot"] = db.figures(baseline)
            print(
                f"\nunary hot wallet / direct database comparator = "
                f"{results['unary_hot'].events_per_s / db.events_per_s:.3f}",
                flush=True,
            )
        else:
            print("db_single_statement_hot: skipped (give --database-url with --target)", flush=True)
        print(
            f"{in_flight} calls in flight (batch of 1,000: {min(in_flight, 8)}) over {channels} channels, "
            f"{CLIENT_PROCESSES} client process; unary hot-wallet p99 / Check p99 = "
            f"{results['unary_hot'].quantile_ms(0.99) / baseline.quantile_ms(0.99):.2f}",
            flush=True,
        )
    finally:
        for c in chans:
            await c.close()
    return phases


@contextlib.asynccontextmanager
async def bench_server(
    database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ServiceProcess]:
    """A real `consofta-billing serve` process on a free port against `database_url`, stopped with
    SIGTERM on exit. `extra_env` adds or overrides settings (BILLING_...)."""
    env = {
        "DATABASE_URL": database_url,
        "BILLING_LOG_LEVEL": "warning",
        "BILLING_DB_POOL_MAX_SIZE": "16",
        # No real money moves in a bench: the sandbox provider, chosen explicitly as the service requires.
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
        **(extra_env or {}),
    }
    server = ServiceProcess(env, workdir / "server.log")
    server.start()
    try:
        await server.wait_serving()
        print(f"server pid {server.proc.pid if server.proc else '?'} at {server.target}", flush=True)
        yield server
    finally:
        server.signal(signal.SIGTERM)
        await server.wait_exit()


@contextlib.asynccontextmanager
async def bench_postgres(workdir: Path) -> AsyncIterator[str]:
    """An admin URL: BILLING_BENCH_DATABASE_URL's, or an embedded Postgres started for this run."""
    given = os.environ.get("BILLING_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    embedded = EmbeddedPostgres(workdir / "pgdata")
    admin_url = await asyncio.to_thread(embedded.start)
    try:
        yield admin_url
    finally:
        await asyncio.to_thread(embedded.stop)


async def bench_workers(counts: list[int], args: argparse.Namespace, seconds: float) -> None:
    from bench.servers import bench_database, cores_note, served

    print(cores_note(), flush=True)
    runs: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)
        async with bench_database(Path(tmp)) as url:
            for n in counts:
                async with served(url, workers=n, log_dir=Path(tmp)) as target:
                    print(f"\n== serve --workers {n} at {target}", flush=True)
                    runs[n] = await bench(
                        target, url, url, args.in_flight, seconds, args.wallets, args.channels
                    )
    base = runs[counts[0]]
    print(f"\nrates by server processes, as a ratio to {counts[0]}; {cores_note()}")
    for phase in base:
        cells = "   ".join(
            f"{n}: {runs[n][phase]['events_per_s']:8.0f}/s "
            f"{runs[n][phase]['events_per_s'] / base[phase]['events_per_s']:5.2f}x"
            for n in counts
        )
        print(f"{phase:<24} {cells}", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"workers": {str(n): runs[n] for n in counts}, "cores": cores_note()}, indent=2) + "\n"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", help="HOST:PORT of a running server; default: start one here")
    parser.add_argument(
        "--database-url", help="with --target: the server's database, for seeding and the db comparator"
    )
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--quick", action="store_true", help="every phase in about 60 s in all")
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--workers",
        type=lambda v: [int(n) for n in v.split(",")],
        help="server process counts to compare, e.g. 1,2,4 (serve --workers N each)",
    )
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    if args.workers:
        await bench_workers(args.workers, args, seconds)
        return
    load_before = os.getloadavg()
    started = time.monotonic()
    if args.target:
        admin_url = args.database_url
        phases = await bench(
            args.target, args.database_url, admin_url, args.in_flight, seconds, args.wallets, args.channels
        )
    else:
        with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
            os.chmod(tmp, 0o755)
            async with bench_postgres(Path(tmp)) as admin_url:
                # A database of this run's own on a shared server; the embedded one is ours anyway.
                name = (
                    DATABASE_NAME
                    if "BILLING_BENCH_DATABASE_URL" not in os.environ
                    else f"billing_bench_{uuid.uuid4().hex[:8]}"
                )
                await ensure_database(admin_url, name)
                database_url = with_database(admin_url, name)
                async with bench_server(database_url, Path(tmp)) as server:
                    phases = await bench(
                        server.target,
                        database_url,
                        admin_url,
                        args.in_flight,
                        seconds,
                        args.wallets,
                        args.channels,
                    )
    took_s = time.monotonic() - started
    print(f"took {took_s:.0f} s; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "phases": phases,
                    "in_flight": args.in_flight,
                    "client_processes": CLIENT_PROCESSES,
                    "seconds_per_phase": seconds,
                    "load_average_before": load_before[0],
                    "load_average_after": os.getloadavg()[0],
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    asyncio.run(main())
