"""GetStatement: one calendar month of a wallet, in a time zone, tied out with the ledger.

The month is the ledger's sequence range (opening, closing] (see ledger_range.py). Opening and closing
balances are balance_after_nanos of the boundary entries, not sums over time, and every movement is an
entry of that range, so opening + movements == closing holds exactly, and each month's closing is the
next month's opening. Credits, adjustments and corrections are listed one by one.

Corrections are lines of their own: a voided usage record stays in the usage debits of the month it was
debited, and its void (a `usage_void` entry, naming the record) is listed under usage_voids in the month
the void was made; a manual debit is listed under manual_debits. Both are ledger entries of the range, so
the statement still ties out.

Usage debits are not read one by one: usage_debit_totals (migration 0006_usage_debit_totals)
keeps, per rate key, running totals of the debits' ledger amounts at the end of each 15-minute bucket
of ledger time. The month's debits of a rate key are the totals before its end minus the totals before
its start, two index probes per rate key, so a month of 500,000 debits costs what a month of 1,000
does. A month boundary off the quarter-hour grid (a historical offset such as Monrovia's -0:44:30) adds
the debits between the bucket start and the boundary, read individually: at most 15 minutes of them.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from service.app import rows
from service.app.reporting.companies import Queryable, require_wallet
from service.app.reporting.ledger_range import boundary_before
from service.app.reporting.summaries import Sums, bucket_floor
from service.domain.ledger import (
    ADJUSTMENT,
    MANUAL_CREDIT,
    MANUAL_DEBIT,
    PRELOAD_CREDIT,
    RECHARGE_CREDIT,
    USAGE_VOID,
    LedgerEntry,
)
from service.domain.periods import month_range
from service.domain.usage_kinds import RATE_KEYS, RateKey

RECHARGE_TYPES = (RECHARGE_CREDIT, PRELOAD_CREDIT)


@dataclass
class Statement:
    company_id: str
    year: int
    month: int
    time_zone: str
    start: datetime
    end: datetime
    opening_sequence: int
    opening_balance_nanos: int
    closing_sequence: int
    closing_balance_nanos: int
    usage_debits: dict[RateKey, Sums] = field(default_factory=dict)
    # Ledger rows by kind: recharges (recharge/preload credits), manual credits, adjustments, other types.
    recharges: list[LedgerEntry] = field(default_factory=list)
    manual_credits: list[LedgerEntry] = field(default_factory=list)
    adjustments: list[LedgerEntry] = field(default_factory=list)
    usage_voids: list[LedgerEntry] = field(default_factory=list)
    manual_debits: list[LedgerEntry] = field(default_factory=list)
    other_entries: list[LedgerEntry] = field(default_factory=list)

    @property
    def usage_debits_nanos(self) -> int:
        return sum(s.amount_nanos for s in self.usage_debits.values())

    @property
    def movements_nanos(self) -> int:
        listed = (
            self.recharges
            + self.manual_credits
            + self.adjustments
            + self.usage_voids
            + self.manual_debits
            + self.other_entries
        )
        return self.usage_debits_nanos + sum(e.amount_nanos for e in listed)


# Per rate key, the running totals of its debits posted before $2, and before $3 (both on the bucket grid).
_TOTALS_SQL = """
    select k.rate_key,
           coalesce(c.record_count, 0) - coalesce(o.record_count, 0) as record_count,
           coalesce(c.quantity, 0) - coalesce(o.quantity, 0) as quantity,
           coalesce(c.billable_units, 0) - coalesce(o.billable_units, 0) as billable_units,
           coalesce(c.ledger_amount_nanos, 0) - coalesce(o.ledger_amount_nanos, 0) as amount_nanos
      from unnest($4::text[]) as k (rate_key)
      left join lateral (
          select * from usage_debit_totals t
           where t.company_id = $1 and t.rate_key = k.rate_key and t.bucket_start < $2
           order by t.bucket_start desc limit 1) o on true
      left join lateral (
          select * from usage_debit_totals t
           where t.company_id = $1 and t.rate_key = k.rate_key and t.bucket_start < $3
           order by t.bucket_start desc limit 1) c on true
"""
# The debits posted in [$2, $3), less than one bucket, read one by one.
_SLIVER_SQL = """
    select r.rate_key, count(*) as record_count, sum(r.quantity)::bigint as quantity,
           sum(r.billable_units)::bigint as billable_units, sum(e.amount_nanos)::bigint as amount_nanos
      from ledger_entries e
      join usage_records r on r.company_id = e.company_id and r.usage_record_id = e.usage_record_id
     where e.company_id = $1 and e.created_at >= $2 and e.created_at < $3 and e.entry_type = 'usage_debit'
     group by r.rate_key
"""


async def _usage_debits(
    conn: Queryable, company_id: str, start: datetime, end: datetime
) -> dict[RateKey, Sums]:
    """Sums of the debits posted in [start, end), per rate key (keys without debits give zero sums)."""
    start_floor, end_floor = bucket_floor(start), bucket_floor(end)
    by_key: dict[RateKey, Sums] = defaultdict(Sums)
    for row in await conn.fetch(_TOTALS_SQL, company_id, start_floor, end_floor, list(RATE_KEYS)):
        by_key[row["rate_key"]].add(_sums(row))
    # totals(t) = totals(floor(t)) + the debits in [floor(t), t): add the end's sliver, take the start's.
    for lo, hi, sign in ((end_floor, end, 1), (start_floor, start, -1)):
        if lo < hi:
            for row in await conn.fetch(_SLIVER_SQL, company_id, lo, hi):
                by_key[row["rate_key"]].add(_sums(row, sign))
    return by_key


def _sums(row: asyncpg.Record, sign: int = 1) -> Sums:
    return Sums(
        sign * row["record_count"],
        sign * row["quantity"],
        sign * row["billable_units"],
        sign * row["amount_nanos"],
    )


async def statement(
    pool: asyncpg.Pool, company_id: str, year: int, month: int, zone: zoneinfo.ZoneInfo
) -> Statement:
    start, end = month_range(year, month, zone)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await require_wallet(conn, company_id)
        opening = await boundary_before(conn, company_id, start)
        closing = await boundary_before(conn, company_id, end)
        result = Statement(
            company_id, year, month, zone.key, start, end,
            opening.sequence, opening.balance_nanos, closing.sequence, closing.balance_nanos,
        )  # fmt: skip
        by_key = await _usage_debits(conn, company_id, start, end)
        result.usage_debits = {key: sums for key, sums in by_key.items() if sums.record_count}
        others = await conn.fetch(
            """
            select sequence, entry_type, amount_nanos, balance_before_nanos, balance_after_nanos,
                   created_at, usage_record_id, reference, description
              from ledger_entries
             where company_id = $1 and sequence > $2 and sequence <= $3 and entry_type <> 'usage_debit'
             order by sequence
            """,
            company_id,
            opening.sequence,
            closing.sequence,
        )
    # Every entry of the range is a debit or one of `others`: the running totals must count the rest.
    debits = closing.sequence - opening.sequence - len(others)
    counted = sum(s.record_count for s in result.usage_debits.values())
    assert counted == debits, f"usage totals of {company_id} count {counted} debits, the ledger {debits}"
    for entry in map(rows.ledger_entry, others):
        kind = entry.entry_type
        if kind in RECHARGE_TYPES:
            result.recharges.append(entry)
        elif kind == MANUAL_CREDIT:
            result.manual_credits.append(entry)
        elif kind == ADJUSTMENT:
            result.adjustments.append(entry)
        elif kind == USAGE_VOID:
            result.usage_voids.append(entry)
        elif kind == MANUAL_DEBIT:
            result.manual_debits.append(entry)
        else:
            result.other_entries.append(entry)
    return result
