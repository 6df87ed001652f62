"""A wallet's history: its ledger entries, newest first, in pages keyed on the per-wallet sequence.

The page token carries the sequence to continue below, so entries that arrive while a client pages
(always with higher sequences) never shift a later page: nothing is skipped or repeated. The token also
carries a digest of the query, so a token cannot be replayed against other filters (AIP-158).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.app import page_tokens, rows
from service.domain.errors import CompanyNotFound
from service.domain.ledger import LedgerEntry

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_LIST_SQL = """
    select sequence, entry_type, amount_nanos, balance_before_nanos, balance_after_nanos, created_at,
           usage_record_id, reference, description
      from ledger_entries
     where company_id = $1
       and sequence < $2
       and ($3::text[] is null or entry_type = any($3::text[]))
       and ($4::timestamptz is null or created_at >= $4)
       and ($5::timestamptz is null or created_at < $5)
     order by sequence desc
     limit $6
"""


@dataclass(frozen=True)
class TransactionQuery:
    company_id: str
    entry_types: tuple[str, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None

    def digest(self) -> str:
        return page_tokens.digest(
            "wallet_transactions",
            self.company_id,
            sorted(set(self.entry_types)),
            None if self.start_time is None else self.start_time.isoformat(),
            None if self.end_time is None else self.end_time.isoformat(),
        )


@dataclass(frozen=True)
class TransactionPage:
    entries: list[LedgerEntry]
    next_page_token: str


def encode_page_token(query: TransactionQuery, before_sequence: int) -> str:
    return page_tokens.encode(query.digest(), before_sequence)


def decode_page_token(query: TransactionQuery, token: str) -> int:
    """The sequence to continue below, or InvalidArgument naming page_token."""
    (before,) = page_tokens.decode(token, query.digest(), positions=1)
    return page_tokens.positive_int(before)


async def list_transactions(
    pool: asyncpg.Pool, query: TransactionQuery, page_size: int, page_token: str
) -> TransactionPage:
    before = decode_page_token(query, page_token) if page_token else None
    async with pool.acquire() as conn:
        last_sequence = await conn.fetchval(
            "select last_sequence from wallets where company_id = $1", query.company_id
        )
        if last_sequence is None:
            raise CompanyNotFound(query.company_id)
        upper = before if before is not None else last_sequence + 1
        found = await conn.fetch(
            _LIST_SQL,
            query.company_id,
            upper,
            list(query.entry_types) or None,
            query.start_time,
            query.end_time,
            page_size + 1,
        )
    entries = [rows.ledger_entry(row) for row in found[:page_size]]
    more = len(found) > page_size
    token = encode_page_token(query, entries[-1].sequence) if more else ""
    return TransactionPage(entries, token)
