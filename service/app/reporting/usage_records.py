"""ListUsageRecords: keyset pages over (occurred_at, usage_record_id), newest first, under a snapshot.

The page token carries the last row's sort key and a snapshot: the wallet's last ledger sequence when
the first page was served. Every record has the sequence of the debit it produced, and sequences are
assigned under the wallet lock in commit order, so `ledger_sequence <= snapshot` is exactly the set of
records that existed then. Later records (even ones that occurred long ago and would sort into pages
already served) never appear, and keyset paging never skips or repeats a row, so paging is stable under
concurrent inserts. The token also carries a digest of the filters, so it cannot be replayed against
another query.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from service.app import page_tokens, rows
from service.app.reporting.companies import require_wallet
from service.domain.ledger import UsageRecord
from service.domain.usage_kinds import RateKey

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A position in a token must be a time Python and Postgres can both hold (years 1 to 9999).
_MIN_MICROS = -62_135_596_800_000_000
_MAX_MICROS = 253_402_300_799_000_000


@dataclass(frozen=True)
class UsageRecordQuery:
    company_id: str
    rate_keys: list[RateKey] | None  # None: every key
    occurred_after: datetime | None
    occurred_before: datetime | None
    page_size: int
    page_token: str

    def digest(self) -> str:
        return page_tokens.digest(
            "usage_records",
            self.company_id,
            None if self.rate_keys is None else sorted(self.rate_keys),
            None if self.occurred_after is None else _micros(self.occurred_after),
            None if self.occurred_before is None else _micros(self.occurred_before),
        )


@dataclass(frozen=True)
class UsageRecordPage:
    records: list[UsageRecord]
    next_page_token: str


@dataclass(frozen=True)
class _Cursor:
    snapshot_sequence: int
    occurred_at_us: int | None
    usage_record_id: str | None


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _encode(digest: str, cursor: _Cursor) -> str:
    return page_tokens.encode(digest, cursor.snapshot_sequence, cursor.occurred_at_us, cursor.usage_record_id)


def _decode(token: str, digest: str) -> _Cursor:
    snapshot, occurred_us, record_id = page_tokens.decode(token, digest, positions=3)
    if not isinstance(occurred_us, int) or not isinstance(record_id, str):
        raise page_tokens.not_ours()
    if not _MIN_MICROS <= occurred_us <= _MAX_MICROS:
        raise page_tokens.not_ours()
    try:
        uuid.UUID(record_id)
    except ValueError:
        raise page_tokens.not_ours() from None
    return _Cursor(page_tokens.positive_int(snapshot), occurred_us, record_id)


async def list_usage_records(pool: asyncpg.Pool, query: UsageRecordQuery) -> UsageRecordPage:
    digest = query.digest()
    if query.page_token:
        cursor = _decode(query.page_token, digest)
    else:
        cursor = _Cursor(await require_wallet(pool, query.company_id), None, None)
    # Built from fixed pieces so that each filter combination gets its own plan that can use the
    # (company_id, occurred_at, usage_record_id) index; every value is a bind parameter.
    where = ["company_id = $1", "ledger_sequence <= $2"]
    args: list[object] = [query.company_id, cursor.snapshot_sequence]
    if query.rate_keys is not None:
        args.append(list(query.rate_keys))
        where.append(f"rate_key = any(${len(args)}::text[])")
    if query.occurred_after is not None:
        args.append(query.occurred_after)
        where.append(f"occurred_at >= ${len(args)}")
    if query.occurred_before is not None:
        args.append(query.occurred_before)
        where.append(f"occurred_at < ${len(args)}")
    if cursor.occurred_at_us is not None:
        args.append(_EPOCH + timedelta(microseconds=cursor.occurred_at_us))
        args.append(cursor.usage_record_id)
        where.append(f"(occurred_at, usage_record_id) < (${len(args) - 1}, ${len(args)}::uuid)")
    args.append(query.page_size + 1)
    found = await pool.fetch(
        f"""
        select * from usage_records
         where {" and ".join(where)}
         order by occurred_at desc, usage_record_id desc
         limit ${len(args)}
        """,
        *args,
    )
    records = [rows.usage_record(row) for row in found[: query.page_size]]
    if len(found) <= query.page_size:
        return UsageRecordPage(records, "")
    last = records[-1]
    next_cursor = _Cursor(cursor.snapshot_sequence, _micros(last.occurred_at), str(last.usage_record_id))
    return UsageRecordPage(records, _encode(digest, next_cursor))
