"""Ledger invariants, checked after every test that touched a database (pgledger's habit), and by the
fault harness's checker (bench/chaos.py)."""

from __future__ import annotations

import asyncpg

_BROKEN_SUMS = """
    select w.company_id, w.balance_nanos, coalesce(sum(e.amount_nanos), 0) as entries_sum,
           w.last_sequence, count(e.sequence) as entries
      from wallets w left join ledger_entries e using (company_id)
     group by w.company_id
    having w.balance_nanos <> coalesce(sum(e.amount_nanos), 0) or w.last_sequence <> count(e.sequence)
"""
_BROKEN_CHAIN = """
    select company_id, sequence, balance_before_nanos, previous_after
      from (select company_id, sequence, balance_before_nanos,
                   lag(balance_after_nanos, 1, 0::bigint) over w as previous_after,
                   lag(sequence, 1, 0::bigint) over w as previous_sequence
              from ledger_entries window w as (partition by company_id order by sequence)) chained
     where balance_before_nanos <> previous_after or sequence <> previous_sequence + 1
"""


async def ledger_violations(conn: asyncpg.Connection) -> list[str]:
    """Each balance that differs from the sum of its entries, and each break in a wallet's chain."""
    found = [f"wallet balance differs from its entries: {dict(r)}" for r in await conn.fetch(_BROKEN_SUMS)]
    found += [f"ledger chain is broken: {dict(r)}" for r in await conn.fetch(_BROKEN_CHAIN)]
    return found


async def assert_ledger_invariants(conn: asyncpg.Connection) -> None:
    """Each balance equals the sum of its entries, and each wallet's chain of entries is continuous."""
    broken = await ledger_violations(conn)
    assert not broken, "\n".join(broken)
