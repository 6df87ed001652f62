"""GetStatement reads running totals of the debits; these stay exact under concurrency and odd boundaries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from consofta.billing.v1 import reporting_pb2

from service.api.wire.money import nanos_of
from service.domain.usage_kinds import DEFAULT_RATES_NANOS, Direction, EmailUsage, SmsUsage
from tests.conftest import Stubs
from tests.reporting import ledger_writer
from tests.reporting.conftest import EVERY_KIND
from tests.reporting.test_statements_and_summaries import _rate_key
from tests.wallet.conftest import emails, outbound_call, record

_BY_KEY_SQL = """
    select r.rate_key, count(*) as n, sum(r.quantity)::bigint as q, sum(r.billable_units)::bigint as b,
           sum(e.amount_nanos)::bigint as a
      from usage_records r join ledger_entries e
        on e.company_id = r.company_id and e.sequence = r.ledger_sequence
     where r.company_id = $1 and e.created_at >= $2 and e.created_at < $3
     group by r.rate_key
"""


Sums = dict[str, tuple[int, int, int, int]]


async def _expected(conn: asyncpg.Connection, company: str, start: datetime, end: datetime) -> Sums:
    rows = await conn.fetch(_BY_KEY_SQL, company, start, end)
    return {r["rate_key"]: (r["n"], r["q"], r["b"], r["a"]) for r in rows}


def _got(statement: reporting_pb2.Statement) -> Sums:
    return {
        _rate_key(t.category): (t.record_count, t.quantity, t.billable_units, nanos_of(t.amount))
        for t in statement.usage_debits
    }


async def test_concurrent_debits_keep_the_running_totals_exact(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    usages = [emails(1 + i % 4) if i % 2 else outbound_call(30 + i) for i in range(60)]
    await asyncio.gather(
        *(stubs.usage.RecordUsage(record(company, f"c-{i}", used)) for i, used in enumerate(usages))
    )
    now = datetime.now(UTC)
    reply = await stubs.wallet.GetStatement(
        reporting_pb2.GetStatementRequest(company_id=company, year=now.year, month=now.month, time_zone="UTC")
    )
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    expected = await _expected(conn, company, start, start + timedelta(days=32))
    assert sum(n for n, *_ in expected.values()) == 60
    assert _got(reply.statement) == expected
    # And the stored running totals are the running sums of the records, bucket by bucket.
    drift = await conn.fetchval(
        """
        with recomputed as (
            select r.rate_key, usage_rollup_bucket(e.created_at) as bucket_start,
                   sum(count(*)) over w as n, sum(sum(e.amount_nanos)) over w as a
              from usage_records r
              join ledger_entries e on e.company_id = r.company_id and e.sequence = r.ledger_sequence
             where r.company_id = $1
             group by 1, 2
            window w as (partition by r.rate_key order by usage_rollup_bucket(e.created_at)))
        select count(*)
          from recomputed
          full join (select * from usage_debit_totals where company_id = $1) t using (rate_key, bucket_start)
         where t.record_count is distinct from recomputed.n
            or t.ledger_amount_nanos is distinct from recomputed.a
        """,
        company,
    )
    assert drift == 0


@pytest.mark.parametrize("zone", ["Africa/Monrovia", "Asia/Kathmandu", "America/New_York"])
async def test_month_boundaries_off_the_bucket_grid_tie_out(
    stubs: Stubs, conn: asyncpg.Connection, zone: str
) -> None:
    """Monrovia was UTC-0:44:30 until 1972: its months start inside a 15-minute bucket, read one by one."""
    company = await stubs.new_company()
    # The default card starts in 2000; give the company a card of its own from 1950.
    card = await conn.fetchval(
        "insert into rate_cards (company_id, version, effective_from) values ($1, 1, '1950-01-01Z')"
        " returning rate_card_id",
        company,
    )
    await conn.executemany(
        "insert into rate_card_rates values ($1, $2, $3)",
        [(card, key, price) for key, price in DEFAULT_RATES_NANOS.items()],
    )
    reply = await stubs.wallet.GetStatement(
        reporting_pb2.GetStatementRequest(company_id=company, year=1971, month=5, time_zone=zone)
    )
    start = reply.statement.start_time.ToDatetime(UTC)
    end = reply.statement.end_time.ToDatetime(UTC)
    # Debits just before, at and after both boundaries, and through the month.
    moments = [
        start - timedelta(hours=2), start - timedelta(seconds=1), start, start + timedelta(seconds=1),
        start + timedelta(minutes=14), start + timedelta(days=10),
        end - timedelta(minutes=14), end - timedelta(seconds=1), end, end + timedelta(seconds=1),
    ]  # fmt: skip
    for i, at in enumerate(moments):
        used = EVERY_KIND[i % len(EVERY_KIND)] if i % 3 else EmailUsage(5 + i)
        await ledger_writer.usage(conn, company, used, at)
    await ledger_writer.usage(conn, company, SmsUsage(Direction.INBOUND, segments=2), end + timedelta(days=3))
    reply = await stubs.wallet.GetStatement(
        reporting_pb2.GetStatementRequest(company_id=company, year=1971, month=5, time_zone=zone)
    )
    expected = await _expected(conn, company, start, end)
    assert sum(n for n, *_ in expected.values()) == 6
    assert _got(reply.statement) == expected
    assert nanos_of(reply.statement.usage_debits_amount) == sum(a for *_, a in expected.values())
