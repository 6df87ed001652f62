"""Statements and usage summaries tie out exactly with the ledger, across a month boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from consofta.billing.v1 import (
    reporting_pb2,
    usage_pb2,
    usage_service_pb2,
)
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.wire.enums import value_prefix
from service.api.wire.money import nanos_of
from service.api.wire.timestamps import timestamp
from service.domain.money import usd
from tests.conftest import Stubs
from tests.reporting import ledger_writer
from tests.reporting.conftest import EVERY_KIND

NY = "America/New_York"


def ts(moment: datetime) -> Timestamp:
    return timestamp(moment)


async def history(conn: asyncpg.Connection, company: str) -> None:
    """Jan-Feb 2025 in New York: every usage kind in both months, recharges with card and PaymentIntent,
    a pre-load, manual credits, adjustments both ways, and entries either side of the New York month
    boundary (2025-02-01 05:00 UTC)."""
    jan = datetime(2025, 1, 10, 15, 0, tzinfo=UTC)
    await ledger_writer.credit(
        conn, company, "preload_credit", usd(50), jan, reference="pi_preload_1", description="visa 4242"
    )
    for i, used in enumerate(EVERY_KIND):
        await ledger_writer.usage(conn, company, used, jan + timedelta(hours=i))
    await ledger_writer.credit(
        conn, company, "manual_credit", usd(5, 250_000_000), jan + timedelta(days=3), description="goodwill"
    )
    await ledger_writer.credit(
        conn, company, "adjustment", -usd(1, 1), jan + timedelta(days=4), reference="adj-1"
    )
    # 23:30 on Jan 31 in New York is 04:30 UTC on Feb 1: January's in New York, February's in UTC.
    late_jan = datetime(2025, 2, 1, 4, 30, tzinfo=UTC)
    for used in EVERY_KIND[:4]:
        await ledger_writer.usage(conn, company, used, late_jan, late_jan)
    await ledger_writer.credit(
        conn, company, "recharge_credit", usd(20), late_jan + timedelta(minutes=1),
        reference="pi_3Jan31", description="visa 4242",
    )  # fmt: skip
    feb = datetime(2025, 2, 1, 5, 0, tzinfo=UTC)  # the first instant of February in New York
    for i, used in enumerate(EVERY_KIND):
        await ledger_writer.usage(conn, company, used, feb + timedelta(days=i, minutes=7))
    await ledger_writer.credit(
        conn, company, "recharge_credit", usd(20), feb + timedelta(days=12),
        reference="pi_3Feb13", description="mastercard 4444",
    )  # fmt: skip
    await ledger_writer.credit(
        conn, company, "adjustment", usd(0, 3), feb + timedelta(days=20), description="fix"
    )


async def statement(stubs: Stubs, company: str, year: int, month: int) -> reporting_pb2.Statement:
    reply = await stubs.wallet.GetStatement(
        reporting_pb2.GetStatementRequest(company_id=company, year=year, month=month, time_zone=NY)
    )
    return reply.statement


def movements(s: reporting_pb2.Statement) -> int:
    listed = [
        *s.recharges,
        *s.manual_credits,
        *s.adjustments,
        *s.usage_voids,
        *s.manual_debits,
        *s.other_entries,
    ]
    assert sum(nanos_of(e.amount) for e in s.usage_voids) == nanos_of(s.usage_voids_amount)
    assert sum(nanos_of(e.amount) for e in s.manual_debits) == nanos_of(s.manual_debits_amount)
    assert sum(nanos_of(e.amount) for e in s.recharges) == nanos_of(s.recharges_amount)
    assert sum(nanos_of(e.amount) for e in s.manual_credits) == nanos_of(s.manual_credits_amount)
    assert sum(nanos_of(e.amount) for e in s.adjustments) == nanos_of(s.adjustments_amount)
    assert sum(nanos_of(t.amount) for t in s.usage_debits) == nanos_of(s.usage_debits_amount)
    return nanos_of(s.usage_debits_amount) + sum(nanos_of(e.amount) for e in listed)


async def ledger_sums(
    conn: asyncpg.Connection, company: str, start: datetime, end: datetime
) -> dict[str, int]:
    rows = await conn.fetch(
        """
        select entry_type, sum(amount_nanos)::bigint as amount from ledger_entries
         where company_id = $1 and created_at >= $2 and created_at < $3 group by entry_type
        """,
        company,
        start,
        end,
    )
    return {r["entry_type"]: r["amount"] for r in rows}


async def test_statements_tie_out_with_the_ledger_and_chain_across_months(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    await history(conn, company)
    # And the current month through the real RecordUsage path.
    await stubs.usage.RecordUsage(
        usage_service_pb2.RecordUsageRequest(
            company_id=company,
            idempotency_key="now-1",
            usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=7)),
        )
    )
    jan, feb = await statement(stubs, company, 2025, 1), await statement(stubs, company, 2025, 2)
    dec = await statement(stubs, company, 2024, 12)

    assert nanos_of(dec.opening_balance) == nanos_of(dec.closing_balance) == 0
    assert nanos_of(jan.opening_balance) == 0 and jan.opening_ledger_sequence == 0
    assert nanos_of(jan.closing_balance) == nanos_of(feb.opening_balance)
    assert jan.closing_ledger_sequence == feb.opening_ledger_sequence
    for s in (jan, feb):
        assert nanos_of(s.opening_balance) + movements(s) == nanos_of(s.closing_balance)

    # Each figure equals the ledger's own sums over the New York month.
    jan_start, feb_start = datetime(2025, 1, 1, 5, tzinfo=UTC), datetime(2025, 2, 1, 5, tzinfo=UTC)
    mar_start = datetime(2025, 3, 1, 5, tzinfo=UTC)
    for s, (lo, hi) in ((jan, (jan_start, feb_start)), (feb, (feb_start, mar_start))):
        sums = await ledger_sums(conn, company, lo, hi)
        assert nanos_of(s.usage_debits_amount) == sums.get("usage_debit", 0)
        assert nanos_of(s.recharges_amount) == sums.get("recharge_credit", 0) + sums.get("preload_credit", 0)
        assert nanos_of(s.manual_credits_amount) == sums.get("manual_credit", 0)
        assert nanos_of(s.adjustments_amount) == sums.get("adjustment", 0)
        closing = await conn.fetchval(
            "select balance_after_nanos from ledger_entries where company_id = $1 and created_at < $2 "
            "order by sequence desc limit 1",
            company,
            hi,
        )
        assert nanos_of(s.closing_balance) == closing

    # Every usage category, per category, from the usage records of the month's debits.
    assert len(jan.usage_debits) == 7 and len(feb.usage_debits) == 7
    rows = await conn.fetch(
        """
        select r.rate_key, count(*) as n, sum(r.quantity)::bigint as q, sum(r.billable_units)::bigint as b,
               sum(r.amount_nanos)::bigint as a
          from usage_records r join ledger_entries e
            on e.company_id = r.company_id and e.sequence = r.ledger_sequence
         where r.company_id = $1 and e.created_at >= $2 and e.created_at < $3
         group by r.rate_key
        """,
        company,
        jan_start,
        feb_start,
    )
    expected = {r["rate_key"]: (r["n"], r["q"], r["b"], -r["a"]) for r in rows}
    got = {
        _rate_key(t.category): (t.record_count, t.quantity, t.billable_units, nanos_of(t.amount))
        for t in jan.usage_debits
    }
    assert got == expected

    # Recharges carry their card and PaymentIntent; the Jan 31 23:30 (New York) one is January's.
    assert [(e.entry_type, e.reference, e.description) for e in jan.recharges] == [
        ("preload_credit", "pi_preload_1", "visa 4242"),
        ("recharge_credit", "pi_3Jan31", "visa 4242"),
    ]
    assert [(e.reference, e.description) for e in feb.recharges] == [("pi_3Feb13", "mastercard 4444")]
    assert [nanos_of(e.amount) for e in jan.manual_credits] == [usd(5, 250_000_000)]
    assert [nanos_of(e.amount) for e in jan.adjustments] == [-usd(1, 1)]
    assert [nanos_of(e.amount) for e in feb.adjustments] == [usd(0, 3)]

    # The months chain up to the current one, whose closing balance is the wallet's balance.
    now = datetime.now(UTC)
    previous = feb
    year, month = 2025, 3
    while (year, month) <= (now.year, now.month):
        current = await statement(stubs, company, year, month)
        assert current.opening_ledger_sequence == previous.closing_ledger_sequence
        assert nanos_of(current.opening_balance) == nanos_of(previous.closing_balance)
        assert nanos_of(current.opening_balance) + movements(current) == nanos_of(current.closing_balance)
        previous = current
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    balance = await conn.fetchval("select balance_nanos from wallets where company_id = $1", company)
    assert nanos_of(previous.closing_balance) == balance
    assert previous.usage_debits[0].amount.units == 0 and previous.usage_debits[0].record_count == 1


def _rate_key(category: usage_pb2.UsageCategory) -> str:
    """The rate key a category names: the kind, then each dimension's value (call_inbound_toll_free)."""
    parts = [usage_pb2.UsageType.Name(category.usage_type).removeprefix("USAGE_TYPE_").lower()]
    for field, value in category.ListFields():
        if field.name != "usage_type":
            parts.append(
                field.enum_type.values_by_number[value]
                .name.removeprefix(value_prefix(field.enum_type))
                .lower()
            )
    return "_".join(parts)


async def test_usage_summary_totals_equal_the_records_to_the_nano(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    await history(conn, company)
    start, end = datetime(2025, 1, 1, 5, tzinfo=UTC), datetime(2025, 3, 1, 5, tzinfo=UTC)
    records = await conn.fetch(
        "select * from usage_records where company_id = $1 and occurred_at >= $2 and occurred_at < $3",
        company,
        start,
        end,
    )
    for grouping in (reporting_pb2.SUMMARY_GROUPING_MONTH, reporting_pb2.SUMMARY_GROUPING_DAY):
        reply = await stubs.usage.GetUsageSummary(
            reporting_pb2.GetUsageSummaryRequest(
                company_id=company, start_time=ts(start), end_time=ts(end), grouping=grouping, time_zone=NY
            )
        )
        assert nanos_of(reply.amount) == sum(r["amount_nanos"] for r in records) > 0
        assert sum(nanos_of(p.amount) for p in reply.periods) == nanos_of(reply.amount)
        by_key: dict[str, tuple[int, int, int, int]] = {}
        for r in records:
            n, q, b, a = by_key.get(r["rate_key"], (0, 0, 0, 0))
            by_key[r["rate_key"]] = (n + 1, q + r["quantity"], b + r["billable_units"], a + r["amount_nanos"])
        assert {
            _rate_key(t.category): (t.record_count, t.quantity, t.billable_units, nanos_of(t.amount))
            for t in reply.totals
        } == by_key
        for period in reply.periods:
            assert sum(nanos_of(t.amount) for t in period.totals) == nanos_of(period.amount)
        if grouping == reporting_pb2.SUMMARY_GROUPING_MONTH:
            assert [p.label for p in reply.periods] == ["2025-01", "2025-02"]
            # Summary amounts are what the statements debited for the same records (positive vs negative).
            jan = await statement(stubs, company, 2025, 1)
            assert nanos_of(reply.periods[0].amount) == -nanos_of(jan.usage_debits_amount)
        else:
            assert len(reply.periods) == 31 + 28
            assert (
                reply.periods[30].label == "2025-01-31" and len(reply.periods[30].totals) == 3
            )  # emails, 2 call kinds
