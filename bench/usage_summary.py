"""GetUsageSummary over one month of 1,000,000 usage records, timed over the RPC against a real server.

    python3 dev.py run python bench/usage_summary.py               # embedded Postgres in a temp folder
    BILLING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 dev.py run python bench/usage_summary.py           # a throwaway database on that server

It creates two companies through CreateWallet, seeds one with 1,000,000 usage records (and the other with
1,000) in one month, directly in SQL with generate_series: each record with its usage_debit ledger entry,
sequences and balances chained, the wallet balance set to match (the ledger invariants hold), and the
rollup filled by its trigger. Then, against the `consofta-billing serve` process, it times:
  * health Check (an RPC doing no work): the baseline;
  * GetUsageSummary, the 1,000-record company, one month by day in America/New_York;
  * GetUsageSummary, the 1,000,000-record company, the same month by day and by month;
and, for comparison, the same month aggregated straight from usage_records in SQL (what a covering index
would have to read). Each figure is the median and the worst of --repeat calls.
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
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from consofta.billing.v1 import (
    reporting_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import scratch_database, served
from service.domain.money import format_usd
from service.domain.usage_kinds import CATEGORY_OF_RATE_KEY, kind_named

MONTH_START = datetime(2026, 10, 1, 4, tzinfo=UTC)  # October 2026 in New York (EDT, UTC-4)
MONTH_END = datetime(2026, 11, 1, 4, tzinfo=UTC)

# The seeded rate keys and, for each, what a record of it stores, from the registry: a new kind is
# seeded too. (usage type, rate key, direction, number type, quantity per billable unit)
_SEEDED = [
    (
        category.kind,
        key,
        None if category.value("direction") is None else str(category.value("direction")),
        None if category.value("number_type") is None else str(category.value("number_type")),
        kind.quantity_per_unit,
    )
    for key, category in CATEGORY_OF_RATE_KEY.items()
    if (kind := kind_named(category.kind)) is not None
]

# One statement: records offset .. offset + n - 1 of `total`, spread evenly over the month, cycling
# through every rate key, with their debits chained from the wallet's current balance and sequence.
_SEED_SQL = """
with params as (
    select w.balance_nanos as balance0, w.last_sequence as seq0
      from wallets w where company_id = $1 for update
), kinds as (
    select k.n - 1 as slot, k.usage_type, k.rate_key, k.direction, k.number_type, k.quantity_per_unit
      from unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::int[])
           with ordinality as k(usage_type, rate_key, direction, number_type, quantity_per_unit, n)
), gen as (
    select i, k.usage_type, k.rate_key, k.direction, k.number_type, k.quantity_per_unit,
           1 + i % 5 as units,
           $3::timestamptz + (($4::timestamptz - $3::timestamptz) * (i::float8 / $6)) as at
      from generate_series($5::bigint, $5::bigint + $2::bigint - 1) as i
      join kinds k on k.slot = i % cardinality($8::text[])
), priced as (
    select g.*, r.unit_price_nanos as price, g.units * r.unit_price_nanos as amount
      from gen g join rate_card_rates r on r.rate_key = g.rate_key
      join rate_cards c on c.rate_card_id = r.rate_card_id and c.company_id is null and c.version = 1
), chained as (
    select p.*, params.seq0 + 1 + p.i - $5 as sequence,
           params.balance0 - sum(p.amount) over (order by p.i) as after, gen_random_uuid() as record_id
      from priced p, params
), ledger as (
    insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                balance_after_nanos, usage_record_id, created_at)
    select $1, sequence, 'usage_debit', -amount, after + amount, after, record_id, at from chained
    returning sequence
), records as (
    insert into usage_records (usage_record_id, company_id, idempotency_key, request_hash, usage_type,
                               rate_key, direction, number_type, quantity, billable_units, unit_price_nanos,
                               amount_nanos, rate_card, rate_card_version, occurred_at, recorded_at,
                               ledger_sequence, balance_after_nanos, below_minimum)
    select record_id, $1, 'seed-' || i, '\\x00', usage_type, rate_key, direction, number_type,
           units * quantity_per_unit, units, price, amount, 'default', 1, at, at, sequence, after, false
      from chained
    returning amount_nanos
)
update wallets set balance_nanos = balance_nanos - (select coalesce(sum(amount_nanos), 0) from records),
                   last_sequence = last_sequence + (select count(*) from ledger)
 where company_id = $1
"""

_RAW_SQL = """
select date_trunc('day', occurred_at, 'America/New_York') as day, rate_key, count(*), sum(quantity),
       sum(billable_units), sum(amount_nanos)
  from usage_records where company_id = $1 and occurred_at >= $2 and occurred_at < $3
 group by 1, 2
"""


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> tuple[list[float], object]:
    await call()  # warm-up: connections, plans, caches
    samples, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples, result


def line(name: str, samples: list[float]) -> None:
    print(
        f"{name:<58} median {statistics.median(samples):8.2f} ms   worst {max(samples):8.2f} ms", flush=True
    )


async def seed(database_url: str, company: str, records: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        t0 = time.perf_counter()
        # 200k per statement keeps the transition table and the window sort small.
        for offset in range(0, records, 200_000):
            batch = min(200_000, records - offset)
            await conn.execute(
                _SEED_SQL,
                company,
                batch,
                MONTH_START,
                MONTH_END,
                offset,
                records,
                *zip(*_SEEDED, strict=True),
            )
        await conn.execute("analyze usage_records; analyze usage_rollups; analyze ledger_entries")
        print(f"seeded {records:,} records for {company} in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        await conn.close()


async def bench(target: str, database_url: str, records: int, repeat: int) -> None:
    run = uuid.uuid4().hex[:6]
    big, small = f"bench-big-{run}", f"bench-small-{run}"
    async with grpc.aio.insecure_channel(target) as channel:
        wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
        usage = usage_service_pb2_grpc.UsageServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for company in (big, small):
            await wallets.CreateWallet(
                wallet_service_pb2.CreateWalletRequest(
                    company_id=company, display_name=company, request_id=company
                )
            )
        await seed(database_url, big, records)
        await seed(database_url, small, 1000)

        def summary(
            company: str, grouping: reporting_pb2.SummaryGrouping.ValueType
        ) -> Callable[[], Awaitable[object]]:
            request = reporting_pb2.GetUsageSummaryRequest(
                company_id=company, start_time=ts(MONTH_START), end_time=ts(MONTH_END),
                grouping=grouping, time_zone="America/New_York",
            )  # fmt: skip
            return lambda: usage.GetUsageSummary(request)

        check, _ = await timed(lambda: health.Check(health_pb2.HealthCheckRequest()), repeat)
        line("health Check (baseline, no work)", check)
        day, month = reporting_pb2.SUMMARY_GROUPING_DAY, reporting_pb2.SUMMARY_GROUPING_MONTH
        s_small, _ = await timed(summary(small, day), repeat)
        line("GetUsageSummary, 1,000 records, month by day", s_small)
        s_day, reply = await timed(summary(big, day), repeat)
        line(f"GetUsageSummary, {records:,} records, month by day", s_day)
        s_month, reply = await timed(summary(big, month), repeat)
        line(f"GetUsageSummary, {records:,} records, month as one period", s_month)
        assert isinstance(reply, reporting_pb2.GetUsageSummaryResponse)
        count = sum(t.record_count for t in reply.totals)
        amount = reply.amount.units * 1_000_000_000 + reply.amount.nanos
        conn = await asyncpg.connect(database_url)
        try:
            expected = await conn.fetchrow(
                "select count(*), sum(amount_nanos) from usage_records where company_id = $1", big
            )
            raw, _ = await timed(
                lambda: conn.fetch(_RAW_SQL, big, MONTH_START, MONTH_END), max(3, repeat // 5)
            )
        finally:
            await conn.close()
        line("for comparison: the same month aggregated from the records", raw)
        assert (count, amount) == (expected[0], expected[1]), "summary does not match the records"
        print(
            f"\nsummary covers {count:,} records, {format_usd(amount)} USD: equal to the records' sum",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        async with scratch_database(Path(tmp)) as database_url:
            async with served(database_url, workers=1, log_dir=Path(tmp)) as target:
                await bench(target, database_url, args.records, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
