"""Ledger invariants, checked after every test that touched a database (pgledger's habit)."""

from __future__ import annotations

import asyncpg


async def assert_ledger_invariants(conn: asyncpg.Connection) -> None:
    """Each balance equals the sum of its entries, and each wallet's chain of entries is continuous."""
    broken_sums = await conn.fetch(
        """
        select w.company_id, w.balance_nanos, coalesce(sum(e.amount_nanos), 0) as entries_sum,
               w.last_sequence, count(e.sequence) as entries
          from wallets w left join ledger_entries e using (company_id)
         group by w.company_id
        having w.balance_nanos <> coalesce(sum(e.amount_nanos), 0) or w.last_sequence <> count(e.sequence)
        """
    )
    assert not broken_sums, f"wallet balance differs from its entries: {[dict(r) for r in broken_sums]}"
    broken_chain = await conn.fetch(
        """
        select company_id, sequence, balance_before_nanos, previous_after
          from (select company_id, sequence, balance_before_nanos,
                       lag(balance_after_nanos, 1, 0::bigint) over w as previous_after,
                       lag(sequence, 1, 0::bigint) over w as previous_sequence
                  from ledger_entries window w as (partition by company_id order by sequence)) chained
         where balance_before_nanos <> previous_after or sequence <> previous_sequence + 1
        """
    )
    assert not broken_chain, f"ledger chain is broken: {[dict(r) for r in broken_chain]}"
