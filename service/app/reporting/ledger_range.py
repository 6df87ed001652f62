"""Time ranges of a wallet's ledger as ranges of its sequence.

A trigger (ledger_entries_monotonic_time.sql) keeps created_at non-decreasing along each wallet's
sequence, so "the entries posted before instant t" is a prefix of the sequence. Its last entry is found
with one probe of the (company_id, created_at, sequence) index, and its balance_after_nanos is the
balance at t. Statements and
exports take the entries of [t1, t2) as the sequence range (boundary(t1), boundary(t2)]: the opening
balance plus those entries' amounts is the closing balance (the ledger chain guarantees it), and the
closing boundary of one month is the opening boundary of the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.app.reporting.companies import Queryable


@dataclass(frozen=True)
class Boundary:
    """The last entry posted before some instant: its sequence (0 if none) and the balance after it."""

    sequence: int
    balance_nanos: int


async def boundary_before(conn: Queryable, company_id: str, moment: datetime) -> Boundary:
    row = await conn.fetchrow(
        """
        select sequence, balance_after_nanos from ledger_entries
         where company_id = $1 and created_at < $2
         order by created_at desc, sequence desc
         limit 1
        """,
        company_id,
        moment,
    )
    if row is None:
        return Boundary(0, 0)
    return Boundary(row["sequence"], row["balance_after_nanos"])


async def newest_boundary(conn: Queryable, company_id: str) -> Boundary:
    row = await conn.fetchrow(
        "select last_sequence, balance_nanos from wallets where company_id = $1", company_id
    )
    assert row is not None, "call require_wallet first"
    return Boundary(row["last_sequence"], row["balance_nanos"])
