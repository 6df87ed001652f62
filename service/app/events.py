"""The wallet event stream: reading the `wallet_events` outbox in order, resumable by cursor.

Two kinds of stream:

* **One company** follows the per-company `sequence`. It is assigned under the wallet row lock, which is
  held until commit, and a transaction becomes visible before it releases its locks, so a company's
  events become visible in sequence order: reading `sequence > cursor` never skips one.

* **All companies** cannot follow `event_id`: ids are drawn before commit, so a transaction holding
  event 7 may commit after one holding event 8, and a reader that delivered 8 would skip 7 forever. It
  follows transaction ids instead. Every transaction with a txid below the snapshot's xmin
  (`pg_snapshot_xmin(pg_current_snapshot())`) has finished, so the set of events with txid below it is
  final: nothing can join it later. The stream delivers such final sets as *batches*: batch
  [lo, hi) is every event with lo <= txid < hi, in event_id order. The cursor is (lo, hi, event_id):
  "everything below lo, and the batch's events up to event_id, were delivered". A late-committing
  transaction has txid >= xmin while it runs, so its events always land in a later batch, never behind
  the cursor.

  event_id order keeps a company's events in sequence order inside a batch (both are assigned under the
  wallet lock). Across batches the horizon `hi` is lowered whenever a company's event in [lo, hi) has a
  predecessor (sequence - 1) at or above hi, so a company's events are never delivered out of order.

  Events held back (committed, but above the horizon because an older transaction is still running)
  are re-checked every HELD_BACK_RECHECK_S: the older transaction's end sends no notification.

This module reads; `service.app.event_streams` reads once per notification for every stream of the
process and fans the events out.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from service.domain.errors import FieldViolation, InvalidArgument

log = structlog.get_logger(__name__)

CHANNEL = "wallet_events"
PAGE_SIZE = 500
# An all-companies batch is capped near this many events, so catching up on a long history is paged.
BATCH_EVENTS = 1000
HELD_BACK_RECHECK_S = 0.1
# A safety net only (e.g. for a notification lost while the listener reconnected); not a busy loop.
SAFETY_RECHECK_S = 10.0
# Cursor positions are bigint ids and xid8 values in the database; anything larger was not issued by us.
_MAX_BIGINT = 2**63 - 1

_COLUMNS = "event_id, company_id, sequence, event_type, payload::text as payload_json, created_at"
_COMPANY_SQL = f"""
    select {_COLUMNS} from wallet_events
     where company_id = $1 and sequence > $2
     order by sequence limit {PAGE_SIZE}
"""
_BATCH_SQL = f"""
    select {_COLUMNS} from wallet_events
     where txid >= $1::text::xid8 and txid < $2::text::xid8 and event_id > $3
     order by event_id limit {PAGE_SIZE}
"""
# The horizon: the snapshot's xmin, capped so a batch holds about BATCH_EVENTS events (plus all the
# events of the first transaction, however many).
_HORIZON_SQL = f"""
    with snap as (select pg_snapshot_xmin(pg_current_snapshot()) as xmin)
    select snap.xmin::text as xmin,
           (select txid::text from wallet_events
             where txid > $1::text::xid8 and txid < snap.xmin
             order by txid offset {BATCH_EVENTS} limit 1) as cap,
           exists (select 1 from wallet_events where txid >= $1::text::xid8) as any_at_or_above
      from snap
"""
_BETWEEN_SQL = """
    select exists (select 1 from wallet_events where txid >= $1::text::xid8 and txid < $2::text::xid8)
"""
# The lowest txid in [lo, hi) of an event whose predecessor in its company lies at or above hi.
_ORDER_BREAK_SQL = """
    select min(b.txid)::text
      from wallet_events b
      join wallet_events a on a.company_id = b.company_id and a.sequence = b.sequence - 1
     where b.txid >= $1::text::xid8 and b.txid < $2::text::xid8 and a.txid >= $2::text::xid8
"""


@dataclass(frozen=True)
class WalletEvent:
    event_id: int
    company_id: str
    sequence: int
    event_type: str
    payload_json: str
    created_at: datetime
    cursor: str


# --- cursors -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompanyCursor:
    company_id: str
    sequence: int

    def encode(self) -> str:
        return _b64(f"c1:{self.sequence}:{self.company_id}")


@dataclass(frozen=True)
class AllCursor:
    lo: int  # every event with txid < lo was delivered
    hi: int | None  # the batch [lo, hi) being delivered; None between batches
    event_id: int  # the batch's events up to this id were delivered

    def encode(self) -> str:
        return _b64(f"a1:{self.lo}:{self.hi}:{self.event_id}")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _bad_cursor(why: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("cursor", why)])


def parse_cursor(raw: str, company_id: str | None) -> CompanyCursor | AllCursor:
    """The cursor to resume after; `company_id` None means the all-companies stream."""
    if not raw:
        return AllCursor(0, None, 0) if company_id is None else CompanyCursor(company_id, 0)
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        kind, rest = text.split(":", 1)
        if kind == "c1":
            sequence, owner = rest.split(":", 1)
            parsed: CompanyCursor | AllCursor = CompanyCursor(owner, int(sequence))
        elif kind == "a1":
            lo, hi, event_id = rest.split(":")
            parsed = AllCursor(int(lo), None if hi == "None" else int(hi), int(event_id))
        else:
            raise ValueError(kind)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad_cursor("is not a wallet event cursor from this service") from None
    if isinstance(parsed, CompanyCursor):
        if company_id is None:
            raise _bad_cursor("is a one-company cursor; the all-companies stream needs its own cursor")
        if parsed.company_id != company_id:
            raise _bad_cursor(f"belongs to company {parsed.company_id!r}, not {company_id!r}")
        if not 0 <= parsed.sequence <= _MAX_BIGINT:
            raise _bad_cursor("is not a wallet event cursor from this service")
    else:
        if company_id is not None:
            raise _bad_cursor("is an all-companies cursor; a one-company stream needs its own cursor")
        values = (parsed.lo, parsed.event_id, parsed.hi if parsed.hi is not None else 0)
        if not all(0 <= v <= _MAX_BIGINT for v in values) or (
            parsed.hi is not None and parsed.hi < parsed.lo
        ):
            raise _bad_cursor("is not a wallet event cursor from this service")
    return parsed


class QueryCount:
    """How many statements the readers sent: the cost of the event streams, which tests measure."""

    def __init__(self) -> None:
        self.queries = 0


_UNCOUNTED = QueryCount()


# --- reading ------------------------------------------------------------------------------------------


def _event(row: asyncpg.Record, cursor: str) -> WalletEvent:
    return WalletEvent(
        event_id=row["event_id"],
        company_id=row["company_id"],
        sequence=row["sequence"],
        event_type=row["event_type"],
        payload_json=row["payload_json"],
        created_at=row["created_at"],
        cursor=cursor,
    )


async def read_company_events(
    pool: asyncpg.Pool, cursor: CompanyCursor, count: QueryCount = _UNCOUNTED
) -> list[WalletEvent]:
    count.queries += 1
    rows = await pool.fetch(_COMPANY_SQL, cursor.company_id, cursor.sequence)
    return [_event(r, CompanyCursor(cursor.company_id, r["sequence"]).encode()) for r in rows]


async def _horizon(conn: Any, lo: int, count: QueryCount) -> tuple[int, bool]:
    """(the end of the next final batch starting at lo (== lo when nothing is final yet), whether any
    event has txid >= lo)."""
    count.queries += 1
    row = await conn.fetchrow(_HORIZON_SQL, str(lo))
    assert row is not None
    hi = int(row["xmin"])
    if row["cap"] is not None:
        hi = min(hi, int(row["cap"]))
    hi = max(hi, lo)
    while hi > lo:
        count.queries += 1
        broken = await conn.fetchval(_ORDER_BREAK_SQL, str(lo), str(hi))
        if broken is None:
            break
        hi = max(lo, int(broken))
    return hi, bool(row["any_at_or_above"])


async def read_all_events(
    pool: asyncpg.Pool, cursor: AllCursor, count: QueryCount = _UNCOUNTED
) -> tuple[list[WalletEvent], AllCursor, bool]:
    """(events after cursor, the cursor to continue from, whether committed events are held back)."""
    async with pool.acquire() as conn:
        while True:
            if cursor.hi is None:
                hi, held_back = await _horizon(conn, cursor.lo, count)
                if hi == cursor.lo:
                    return [], cursor, held_back
                cursor = AllCursor(cursor.lo, hi, 0)
            assert cursor.hi is not None
            count.queries += 1
            rows = await conn.fetch(_BATCH_SQL, str(cursor.lo), str(cursor.hi), cursor.event_id)
            if rows:
                lo, hi = cursor.lo, cursor.hi
                events = [_event(r, AllCursor(lo, hi, r["event_id"]).encode()) for r in rows]
                # A short page ends the batch: continue from the next one without reading this one again.
                after = (
                    AllCursor(lo, hi, rows[-1]["event_id"])
                    if len(rows) == PAGE_SIZE
                    else AllCursor(hi, None, 0)
                )
                return events, after, False
            # The batch is exhausted: the next one starts where it ended.
            cursor = AllCursor(cursor.hi, None, 0)


async def read_batch(
    pool: asyncpg.Pool, cursor: AllCursor, last_event_id: int | None, count: QueryCount = _UNCOUNTED
) -> tuple[list[WalletEvent], AllCursor]:
    """The next events of the batch `cursor` is in, up to `last_event_id` if given; the batch is known final.

    For a stream joining the shared reader: it fills the gap between its own position and the reader's
    with the reader's own batch boundaries, so its cursors stay valid for any reader.
    """
    assert cursor.hi is not None
    count.queries += 1
    rows = await pool.fetch(_BATCH_SQL, str(cursor.lo), str(cursor.hi), cursor.event_id)
    if last_event_id is not None:
        rows = [r for r in rows if r["event_id"] <= last_event_id]
    if not rows:
        return [], cursor
    lo, hi = cursor.lo, cursor.hi
    events = [_event(r, AllCursor(lo, hi, r["event_id"]).encode()) for r in rows]
    return events, AllCursor(lo, hi, rows[-1]["event_id"])


async def events_between(pool: asyncpg.Pool, lo: int, hi: int, count: QueryCount = _UNCOUNTED) -> bool:
    """Whether any event has lo <= txid < hi."""
    count.queries += 1
    return bool(await pool.fetchval(_BETWEEN_SQL, str(lo), str(hi)))
