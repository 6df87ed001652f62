"""Load generator for RecordUsage, run as its own process against a running server.

    python3 dev.py run python bench/record_usage.py                    # starts a server (embedded Postgres)
    python3 dev.py run python bench/record_usage.py --target HOST:PORT # against a server you started

It prints, for the same server in the same run:
  * health Check rate: the cost of a unary RPC that does no work (the baseline);
  * RecordUsage on one hot wallet at 64 calls in flight;
  * RecordUsage spread over 10,000 wallets at 64 calls in flight;
with events/s, p50 and p99 latency, and each rate as a ratio of the baseline. Every phase is bounded
in both requests and seconds, and talks only to the target (127.0.0.1 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

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
from tests.support.process import ServiceProcess


@dataclass
class Result:
    name: str
    calls: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_phase(
    name: str, call: Callable[[int], Awaitable[object]], in_flight: int, max_calls: int, max_seconds: float
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
    return Result(name, len(latencies), time.perf_counter() - started, latencies)


def report(result: Result, baseline: Result | None) -> None:
    ratio = f"{result.rate / baseline.rate:6.3f} x Check" if baseline else "  (baseline)"
    print(
        f"{result.name:<34} {result.rate:9.0f} /s   p50 {result.quantile_ms(0.5):7.2f} ms"
        f"   p99 {result.quantile_ms(0.99):7.2f} ms   {ratio}   ({result.calls} calls)",
        flush=True,
    )


async def bench(target: str, in_flight: int, seconds: float, wallets: int, channels: int) -> None:
    chans = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    usage = [usage_service_pb2_grpc.UsageServiceStub(c) for c in chans]
    wallet = [wallet_service_pb2_grpc.WalletServiceStub(c) for c in chans]
    health = [health_pb2_grpc.HealthStub(c) for c in chans]
    run = uuid.uuid4().hex[:8]
    try:
        check = health_pb2.HealthCheckRequest()
        await run_phase("warm-up", lambda n: health[n % channels].Check(check), in_flight, 2000, 5)
        baseline = await run_phase(
            "health Check (no work)", lambda n: health[n % channels].Check(check), in_flight, 200_000, seconds
        )
        report(baseline, None)

        async def create(n: int) -> object:
            company = f"bench-{run}-{n}"
            return await wallet[n % channels].CreateWallet(
                wallet_service_pb2.CreateWalletRequest(
                    company_id=company, display_name=company, request_id=company
                )
            )

        print(f"creating {wallets:,} wallets ...", flush=True)
        created = await run_phase("CreateWallet", create, in_flight, wallets, 600)
        assert created.calls == wallets, "wallet creation did not finish in time"
        report(created, baseline)

        email = usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))

        def record(company_of: Callable[[int], str], tag: str) -> Callable[[int], Awaitable[object]]:
            def call(n: int) -> Awaitable[object]:
                return usage[n % channels].RecordUsage(
                    usage_service_pb2.RecordUsageRequest(
                        company_id=company_of(n), idempotency_key=f"{tag}-{n}", usage=email
                    )
                )

            return call

        hot = await run_phase(
            "RecordUsage, 1 hot wallet",
            record(lambda n: f"bench-{run}-0", f"hot-{run}"),
            in_flight,
            200_000,
            seconds,
        )
        report(hot, baseline)
        spread = await run_phase(
            f"RecordUsage, {wallets:,} wallets",
            record(lambda n: f"bench-{run}-{n % wallets}", f"spread-{run}"),
            in_flight,
            200_000,
            seconds,
        )
        report(spread, baseline)
        print(
            f"\n{in_flight} calls in flight over {channels} channels; hot-wallet p99/p50 = "
            f"{hot.quantile_ms(0.99) / statistics.median(hot.latencies_ms):.1f}",
            flush=True,
        )
    finally:
        for c in chans:
            await c.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", help="HOST:PORT of a running server; default: start one here")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    if args.target:
        await bench(args.target, args.in_flight, args.seconds, args.wallets, args.channels)
        return
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)
        env = {
            "BILLING_PGDATA": f"{tmp}/pgdata",
            "BILLING_LOG_LEVEL": "warning",
            "BILLING_DB_POOL_MAX_SIZE": "16",
        }
        if os.environ.get("BILLING_BENCH_DATABASE_URL"):
            env["DATABASE_URL"] = os.environ["BILLING_BENCH_DATABASE_URL"]
            env.update(BILLING_PAYMENT_PROVIDER="sandbox", BILLING_ALLOW_SANDBOX="1")
        server = ServiceProcess(env, Path(tmp) / "server.log")
        server.start()
        try:
            await server.wait_serving()
            print(f"server pid {server.proc.pid if server.proc else '?'} at {server.target}", flush=True)
            await bench(server.target, args.in_flight, args.seconds, args.wallets, args.channels)
        finally:
            server.signal(__import__("signal").SIGTERM)
            await server.wait_exit()


if __name__ == "__main__":
    asyncio.run(main())
