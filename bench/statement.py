"""GetStatement on a 500,000-debit month against a 1,000-debit month, and what heavy statements do to
RecordUsage, timed over the RPC against a real server.

    python3 dev.py run python bench/statement.py               # embedded Postgres in a temp folder
    BILLING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 dev.py run python bench/statement.py           # a throwaway database on that server

It seeds two companies with one month of usage directly in SQL with generate_series (the seed of
bench/usage_summary.py: each record with its chained ledger debit; the triggers fill the rollup and the
running debit totals), then, against the `consofta-billing serve` process, prints:
  * health Check (no work): the baseline;
  * GetStatement of the 1,000-debit month and of the 500,000-debit month, and their ratio;
  * for comparison, the month's debits aggregated straight from the ledger (what a statement read before);
  * RecordUsage p50/p99 alone, then while 12 clients call GetStatement in a loop on the large company
    (the per-method limit admits BILLING_MAX_CONCURRENT_STATEMENTS at once, the rest get
    RESOURCE_EXHAUSTED and back off);
  * the cost the running totals add to one debit: record_usage() called directly, with the totals
    trigger enabled and disabled, in alternating blocks.
Each figure is the median (and p99 or worst) of repeated calls in the same run.
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
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from consofta.billing.v1 import (
    reporting_pb2,
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import scratch_database, served
from bench.usage_summary import MONTH_START, line, seed, timed
from service.app.record_usage import RECORD_USAGE_SQL, RecordUsageCommand, sql_arguments
from service.domain.usage_kinds import EmailUsage

# The seeded month is October 2026 in New York.
YEAR, MONTH, ZONE = 2026, 10, "America/New_York"

# What GetStatement read before the running totals: every debit of the month, joined to its record.
_LEDGER_SQL = """
select r.rate_key, count(*), sum(r.quantity), sum(r.billable_units), sum(e.amount_nanos)
  from ledger_entries e left join usage_records r on r.usage_record_id = e.usage_record_id
 where e.company_id = $1 and e.created_at >= $2 and e.created_at < $3 and e.entry_type = 'usage_debit'
 group by r.rate_key
"""


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def record_usage_latencies(
    usage: usage_service_pb2_grpc.UsageServiceAsyncStub, company: str, calls: int
) -> list[float]:
    samples = []
    for _ in range(calls):
        request = usage_service_pb2.RecordUsageRequest(
            company_id=company,
            idempotency_key=uuid.uuid4().hex,
            usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1)),
        )
        t0 = time.perf_counter()
        await usage.RecordUsage(request, timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def latency_line(name: str, samples: list[float]) -> None:
    print(
        f"{name:<58} p50 {statistics.median(samples):8.2f} ms   p99 {pct(samples, 0.99):8.2f} ms",
        flush=True,
    )


async def statement_storm(
    wallets: wallet_service_pb2_grpc.WalletServiceAsyncStub, company: str, stop: asyncio.Event
) -> tuple[int, int]:
    """One client calling GetStatement in a loop until `stop`; (answered, refused)."""
    request = reporting_pb2.GetStatementRequest(company_id=company, year=YEAR, month=MONTH, time_zone=ZONE)
    answered = refused = 0
    while not stop.is_set():
        try:
            await wallets.GetStatement(request, timeout=60)
            answered += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            refused += 1
            await asyncio.sleep(0.01)  # a well-behaved client backs off
    return answered, refused


async def debit_cost(database_url: str, company: str, calls: int) -> None:
    """record_usage() directly, with and without the running-totals trigger, in alternating blocks."""
    conn = await asyncpg.connect(database_url)
    samples: dict[bool, list[float]] = {True: [], False: []}
    try:
        for block in range(2 * 10):
            enabled = block % 2 == 0
            verb = "enable" if enabled else "disable"
            await conn.execute(f"alter table usage_records {verb} trigger usage_debit_totals_on_insert")
            for _ in range(calls // 10):
                record_id = uuid.uuid4()
                command = RecordUsageCommand(
                    company_id=company,
                    idempotency_key=f"cost-{record_id}",
                    usage=EmailUsage(1),
                    occurred_at_given=None,
                    received_at=datetime.now(UTC),
                )
                t0 = time.perf_counter()
                await conn.fetchrow(RECORD_USAGE_SQL, *sql_arguments(command, record_id))
                samples[enabled].append((time.perf_counter() - t0) * 1000)
        await conn.execute("alter table usage_records enable trigger usage_debit_totals_on_insert")
        # The debits written with the trigger off are missing from the totals: rebuild them, as an
        # update of the records would, so the bench leaves a consistent database behind.
        await conn.execute(
            "update usage_records set quantity = quantity"
            " where company_id = $1 and idempotency_key like 'cost-%'",
            company,
        )
    finally:
        await conn.close()
    on, off = statistics.median(samples[True]), statistics.median(samples[False])
    print(
        f"{'record_usage() with the running totals trigger':<58} median {on:8.3f} ms\n"
        f"{'record_usage() with the trigger disabled':<58} median {off:8.3f} ms\n"
        f"{'the running totals add per debit':<58}        {on - off:8.3f} ms ({(on / off - 1) * 100:+.1f} %)",
        flush=True,
    )


async def bench(target: str, database_url: str, debits: int, repeat: int) -> None:
    run = uuid.uuid4().hex[:6]
    big, small, hot = f"bench-big-{run}", f"bench-small-{run}", f"bench-hot-{run}"
    async with grpc.aio.insecure_channel(target) as channel:
        wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
        usage = usage_service_pb2_grpc.UsageServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for company in (big, small, hot):
            await wallets.CreateWallet(
                wallet_service_pb2.CreateWalletRequest(
                    company_id=company, display_name=company, request_id=company
                )
            )
        await seed(database_url, big, debits)
        await seed(database_url, small, 1000)

        def statement(company: str) -> reporting_pb2.GetStatementRequest:
            return reporting_pb2.GetStatementRequest(
                company_id=company, year=YEAR, month=MONTH, time_zone=ZONE
            )

        check, _ = await timed(lambda: health.Check(health_pb2.HealthCheckRequest()), repeat)
        line("health Check (baseline, no work)", check)
        s_small, _ = await timed(lambda: wallets.GetStatement(statement(small)), repeat)
        line("GetStatement, 1,000-debit month", s_small)
        s_big, reply = await timed(lambda: wallets.GetStatement(statement(big)), repeat)
        line(f"GetStatement, {debits:,}-debit month", s_big)
        ratio = statistics.median(s_big) / statistics.median(s_small)
        print(f"{'  ratio large / small (medians)':<58} {ratio:8.2f}", flush=True)
        assert isinstance(reply, reporting_pb2.GetStatementResponse)
        conn = await asyncpg.connect(database_url)
        try:
            start, end = reply.statement.start_time.ToDatetime(UTC), reply.statement.end_time.ToDatetime(UTC)
            assert start == MONTH_START
            raw, rows = await timed(lambda: conn.fetch(_LEDGER_SQL, big, start, end), max(3, repeat // 5))
            line("for comparison: the month's debits read from the ledger", raw)
        finally:
            await conn.close()
        assert isinstance(rows, list)
        counted = sum(t.record_count for t in reply.statement.usage_debits)
        amount = reply.statement.usage_debits_amount
        assert counted == sum(r[1] for r in rows) == debits, "the statement does not count every debit"
        assert amount.units * 1_000_000_000 + amount.nanos == sum(r[4] for r in rows)
        print(f"  the statement counts {counted:,} debits and their exact ledger sum", flush=True)

        print(flush=True)
        await record_usage_latencies(usage, hot, 20)  # warm-up
        alone = await record_usage_latencies(usage, hot, 200)
        latency_line("RecordUsage, alone", alone)
        stop = asyncio.Event()
        storm = [asyncio.create_task(statement_storm(wallets, big, stop)) for _ in range(12)]
        await asyncio.sleep(0.5)
        during = await record_usage_latencies(usage, hot, 200)
        stop.set()
        outcomes = await asyncio.gather(*storm)
        latency_line("RecordUsage, while 12 clients loop on GetStatement", during)
        answered, refused = sum(a for a, _ in outcomes), sum(r for _, r in outcomes)
        print(f"  statements answered {answered}, refused RESOURCE_EXHAUSTED {refused}", flush=True)

        print(flush=True)
        await debit_cost(database_url, hot, 1000)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debits", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        async with scratch_database(Path(tmp)) as database_url:
            async with served(database_url, workers=1, log_dir=Path(tmp)) as target:
                await bench(target, database_url, args.debits, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
