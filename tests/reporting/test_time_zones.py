"""Summaries group by the company's own days and months, exactly, in any IANA zone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import reporting_pb2

from service.api.wire.money import nanos_of
from service.api.wire.timestamps import timestamp
from service.domain.usage_kinds import Direction, EmailUsage, SmsUsage
from tests.conftest import Stubs
from tests.reporting import ledger_writer
from tests.support.rpc import rich_error

DAY = reporting_pb2.SUMMARY_GROUPING_DAY


async def summary(
    stubs: Stubs,
    company: str,
    start: datetime,
    end: datetime,
    zone: str,
    grouping: reporting_pb2.SummaryGrouping.ValueType = DAY,
) -> reporting_pb2.GetUsageSummaryResponse:
    return await stubs.usage.GetUsageSummary(
        reporting_pb2.GetUsageSummaryRequest(
            company_id=company,
            start_time=timestamp(start),
            end_time=timestamp(end),
            grouping=grouping,
            time_zone=zone,
        )
    )


def amounts(reply: reporting_pb2.GetUsageSummaryResponse) -> dict[str, int]:
    return {p.label: nanos_of(p.amount) for p in reply.periods if nanos_of(p.amount)}


async def test_usage_at_2330_new_york_time_lands_on_the_new_york_day(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    # 2025-06-10 23:30 EDT is 2025-06-11 03:30 UTC.
    await ledger_writer.usage(conn, company, EmailUsage(1000), datetime(2025, 6, 11, 3, 30, tzinfo=UTC))
    start, end = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    assert amounts(await summary(stubs, company, start, end, "America/New_York")) == {
        "2025-06-10": 675_000_000
    }
    assert amounts(await summary(stubs, company, start, end, "UTC")) == {"2025-06-11": 675_000_000}


async def test_dst_days_are_23_and_25_hours_long_and_keep_their_usage(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    # 23:30 local on the spring-forward day (EDT, UTC-4) and on the fall-back day (EST, UTC-5).
    await ledger_writer.usage(conn, company, EmailUsage(1), datetime(2025, 3, 10, 3, 30, tzinfo=UTC))
    await ledger_writer.usage(conn, company, EmailUsage(2), datetime(2025, 11, 3, 4, 30, tzinfo=UTC))
    # 00:30 local the next days.
    await ledger_writer.usage(conn, company, EmailUsage(4), datetime(2025, 3, 10, 4, 30, tzinfo=UTC))
    await ledger_writer.usage(conn, company, EmailUsage(8), datetime(2025, 11, 3, 5, 30, tzinfo=UTC))
    reply = await summary(
        stubs,
        company,
        datetime(2025, 3, 1, 5, tzinfo=UTC),
        datetime(2025, 12, 1, 5, tzinfo=UTC),
        "America/New_York",
    )
    by_label = {p.label: p for p in reply.periods}
    spring, fall = by_label["2025-03-09"], by_label["2025-11-02"]
    assert spring.end_time.seconds - spring.start_time.seconds == 23 * 3600
    assert fall.end_time.seconds - fall.start_time.seconds == 25 * 3600
    assert amounts(reply) == {
        "2025-03-09": 675_000,
        "2025-03-10": 4 * 675_000,
        "2025-11-02": 2 * 675_000,
        "2025-11-03": 8 * 675_000,
    }


async def test_half_hour_zone_days_start_at_1830_utc(stubs: Stubs, conn: asyncpg.Connection) -> None:
    company = await stubs.new_company()
    await ledger_writer.usage(
        conn, company, EmailUsage(1), datetime(2025, 6, 10, 18, 29, 59, 999999, tzinfo=UTC)
    )
    await ledger_writer.usage(conn, company, EmailUsage(2), datetime(2025, 6, 10, 18, 30, tzinfo=UTC))
    reply = await summary(
        stubs, company, datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC), "Asia/Kolkata"
    )
    assert amounts(reply) == {"2025-06-10": 675_000, "2025-06-11": 2 * 675_000}
    nepal = await summary(
        stubs, company, datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC), "Asia/Kathmandu"
    )
    # Kathmandu (+5:45) days start at 18:15 UTC: both records are on the 11th there.
    assert amounts(nepal) == {"2025-06-11": 3 * 675_000}


async def test_any_range_and_zone_sums_exactly_what_the_records_say(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    """Ranges that cut rollup buckets (odd minutes, an LMT-era zone) read those buckets' records instead."""
    company = await stubs.new_company()
    rng = random.Random(6)
    base = datetime(2025, 3, 1, tzinfo=UTC)
    for i in range(120):
        at = base + timedelta(seconds=rng.randrange(0, 20 * 86400))
        used = (
            EmailUsage(rng.randrange(1, 500))
            if i % 2
            else SmsUsage(Direction.INBOUND, segments=rng.randrange(1, 4))
        )
        await ledger_writer.usage(conn, company, used, at)
    for zone in ("UTC", "America/New_York", "Asia/Kolkata", "Africa/Monrovia", "Pacific/Chatham"):
        start = base + timedelta(minutes=rng.randrange(0, 3000), seconds=rng.randrange(0, 60))
        end = start + timedelta(days=rng.randrange(1, 18), minutes=rng.randrange(0, 900))
        expected = await conn.fetchval(
            "select coalesce(sum(amount_nanos), 0) from usage_records where company_id = $1"
            " and occurred_at >= $2 and occurred_at < $3",
            company,
            start,
            end,
        )
        reply = await summary(stubs, company, start, end, zone)
        assert nanos_of(reply.amount) == expected
        assert sum(nanos_of(p.amount) for p in reply.periods) == expected
        assert reply.periods[0].start_time == timestamp(start) and reply.periods[-1].end_time == timestamp(
            end
        )


async def test_1920s_monrovia_midnights_off_the_quarter_hour_grid_are_exact(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    """Africa/Monrovia was UTC-0:44:30 until 1972: its day boundaries cut rollup buckets in half."""
    company = await stubs.new_company()
    # The default card starts in 2000; give the company a card of its own from 1950.
    card = await conn.fetchval(
        "insert into rate_cards (company_id, version, effective_from) values ($1, 1, '1950-01-01Z')"
        " returning rate_card_id",
        company,
    )
    await conn.execute("insert into rate_card_rates values ($1, 'email', 675000)", card)
    midnight = datetime(1960, 5, 2, 0, 44, 30, tzinfo=UTC)  # 1960-05-02 00:00 in Monrovia
    await ledger_writer.usage(conn, company, EmailUsage(1), midnight - timedelta(seconds=1))
    await ledger_writer.usage(conn, company, EmailUsage(2), midnight)
    reply = await summary(
        stubs, company, datetime(1960, 5, 1, tzinfo=UTC), datetime(1960, 5, 4, tzinfo=UTC), "Africa/Monrovia"
    )
    assert amounts(reply) == {"1960-05-01": 675_000, "1960-05-02": 2 * 675_000}


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "EST5EDT,M3.2.0,M11.1.0"])
async def test_unknown_time_zone_is_invalid_argument(stubs: Stubs, zone: str) -> None:
    company = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await summary(
            stubs, company, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC), zone
        )
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "time_zone" in error.fields


async def test_rollup_matches_the_records_after_inserts_updates_and_deletes(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    for i in range(30):
        await ledger_writer.usage(
            conn, company, EmailUsage(i + 1), datetime(2025, 4, 1, tzinfo=UTC) + timedelta(minutes=7 * i)
        )
    # Not something the service does, but the rollup must not drift if an operator ever does it.
    victim = await conn.fetchval(
        "select usage_record_id from usage_records where company_id = $1 limit 1", company
    )
    await conn.execute(
        "update usage_records set occurred_at = occurred_at + interval '3 hours' where usage_record_id = $1",
        victim,
    )
    other = await conn.fetchval(
        "select usage_record_id from usage_records where company_id = $1 and usage_record_id <> $2 limit 1",
        company,
        victim,
    )
    await conn.execute("delete from usage_records where usage_record_id = $1", other)
    drift = await conn.fetch(
        """
        select * from (
            select company_id, usage_rollup_bucket(occurred_at) as bucket_start, rate_key,
                   count(*) as record_count, sum(quantity) as quantity, sum(billable_units) as billable_units,
                   sum(amount_nanos) as amount_nanos
              from usage_records group by 1, 2, 3) raw
        full join usage_rollups r using (company_id, bucket_start, rate_key)
        where raw.record_count is distinct from r.record_count
           or raw.quantity is distinct from r.quantity
           or raw.billable_units is distinct from r.billable_units
           or raw.amount_nanos is distinct from r.amount_nanos
        """
    )
    assert drift == []
    assert await conn.fetchval("select count(*) from usage_rollups where company_id = $1", company) > 10
