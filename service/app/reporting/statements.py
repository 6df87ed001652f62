"""GetStatement: one calendar month of a wallet, in a time zone, tied out with the ledger.

The month is the ledger's sequence range (opening, closing] (see ledger_range.py). Opening and closing
balances are balance_after_nanos of the boundary entries, not sums over time, and every movement is an
entry of that range, so opening + movements == closing holds exactly, and each month's closing is the
next month's opening. Usage debits are summed per category from their ledger amounts (joined to their
usage records for the category); credits, adjustments and corrections are listed one by one.

Corrections are lines of their own: a voided usage record stays in the usage debits of the month it was
debited, and its void (a `usage_void` entry, naming the record) is listed under usage_voids in the month
the void was made; a manual debit is listed under manual_debits. Both are ledger entries of the range, so
the statement still ties out.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from service.app import rows
from service.app.reporting.companies import require_wallet
from service.app.reporting.ledger_range import boundary_before
from service.app.reporting.summaries import Sums
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
from service.domain.usage_kinds import RateKey

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
        debits = await conn.fetch(
            """
            select r.rate_key, count(*) as record_count, sum(r.quantity)::bigint as quantity,
                   sum(r.billable_units)::bigint as billable_units,
                   sum(e.amount_nanos)::bigint as amount_nanos
              from ledger_entries e
              left join usage_records r
                on r.company_id = e.company_id and r.usage_record_id = e.usage_record_id
             where e.company_id = $1 and e.sequence > $2 and e.sequence <= $3
               and e.entry_type = 'usage_debit'
             group by r.rate_key
            """,
            company_id,
            opening.sequence,
            closing.sequence,
        )
        by_key: dict[RateKey, Sums] = defaultdict(Sums)
        for row in debits:
            # Every debit has its record (record_usage writes both); a missing one is corruption.
            assert row["rate_key"] is not None, f"usage debits of {company_id} without a usage record"
            by_key[row["rate_key"]].add(
                Sums(row["record_count"], row["quantity"], row["billable_units"], row["amount_nanos"])
            )
        result.usage_debits = dict(by_key)
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
