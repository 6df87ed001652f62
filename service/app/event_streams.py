"""WatchWalletEvents for many streams at the cost of one: one reader per process, fanned out in memory.

The LISTEN connection (`service.db.listener`) wakes one reader task (`EventNotifier`). Per round it reads
what is new once, for every stream of the process: the notified companies' events (only for companies
some stream follows) and, when an all-companies stream is open, the next final batches. It hands the
events to each stream that wants them by appending to that stream's bounded buffer; it never waits for a
stream. So a round costs the same few statements whether 1 or 1,000 streams are open.

A stream starts by catching up on its own from its cursor (plain reads, as in `service.app.events`), then
joins the shared reader at the reader's position exactly:

* One company: the reader's position is a sequence. The stream registers (from then on its buffer gets
  every event after that sequence) and reads the gap between its own sequence and the reader's itself.
* All companies: positions are batch cursors, and two readers cut batches differently. The stream joins
  only when its own position is at or behind the reader's: it registers, then reads the gap with the
  reader's own boundaries (every txid below the reader's position is final, and the reader checked its
  batches for order breaks, so [own position, reader's batch start) is a valid batch). Cursors handed out
  stay valid for any reader, this process's or another's.

A stream whose buffer would pass its capacity is ended with ABORTED (`EVENT_STREAM_FELL_BEHIND`) and the
cursor of the last event it sent in the ErrorInfo metadata: reconnecting with it misses nothing. The other
streams never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from service.app.event_reader import EventNotifier, StreamBuffer
from service.app.events import (
    PAGE_SIZE,
    SAFETY_RECHECK_S,
    AllCursor,
    CompanyCursor,
    WalletEvent,
    events_between,
    parse_cursor,
    read_all_events,
    read_batch,
    read_company_events,
)
from service.domain.errors import CompanyNotFound, StreamFellBehind, Unavailable

log = structlog.get_logger(__name__)

# How long a joining all-companies stream that is ahead of the shared reader waits for its next round.
JOIN_WAIT_S = 1.0


# --- one stream -------------------------------------------------------------------------------------------


async def _next_from_buffer(
    notifier: EventNotifier, stream: StreamBuffer, last_cursor: str
) -> list[WalletEvent]:
    """The events the reader handed to this stream since the last call, waiting for some."""
    while True:
        if notifier.closed:
            raise Unavailable("the server is shutting down; reconnect with the cursor of the last event")
        if stream.overflowed:
            raise StreamFellBehind(last_cursor)
        if stream.events:
            taken = list(stream.events)
            stream.events.clear()
            return taken
        stream.woken.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.woken.wait(), SAFETY_RECHECK_S)


async def _watch_company(
    notifier: EventNotifier, company_id: str, cursor: CompanyCursor
) -> AsyncIterator[WalletEvent]:
    pool, count = notifier.pool, notifier.count
    while True:  # catch up alone
        events = await read_company_events(pool, cursor, count)
        for event in events:
            yield event
        if events:
            cursor = CompanyCursor(company_id, events[-1].sequence)
        if len(events) < PAGE_SIZE:
            break
    stream = StreamBuffer(company_id, notifier.buffer_events)
    try:
        head = notifier.join_company(stream, cursor.sequence)
        while cursor.sequence < head:  # what the reader handed out before we joined
            events = [e for e in await read_company_events(pool, cursor, count) if e.sequence <= head]
            if not events:
                break
            for event in events:
                yield event
            cursor = CompanyCursor(company_id, events[-1].sequence)
        while True:
            for event in await _next_from_buffer(notifier, stream, cursor.encode()):
                if event.sequence <= cursor.sequence:
                    continue  # the stream's cursor was ahead of the reader
                if event.sequence != cursor.sequence + 1:
                    # Sequences have no gaps, so this cannot happen; if it ever does, read, don't skip.
                    log.error("wallet event sequence gap", company_id=company_id, after=cursor.sequence)
                    for missed in await read_company_events(pool, cursor, count):
                        if missed.sequence >= event.sequence:
                            break
                        yield missed
                        cursor = CompanyCursor(company_id, missed.sequence)
                yield event
                cursor = CompanyCursor(company_id, event.sequence)
    finally:
        notifier.leave(stream)


async def _catch_up_all(
    notifier: EventNotifier, cursor: AllCursor, sink: list[WalletEvent]
) -> tuple[AllCursor, bool]:
    """One read on the stream's own; appends to sink. Returns (cursor, caught up)."""
    events, cursor, _held_back = await read_all_events(notifier.pool, cursor, notifier.count)
    sink.extend(events)
    return cursor, not events


async def _watch_all(notifier: EventNotifier, cursor: AllCursor) -> AsyncIterator[WalletEvent]:
    pool, count = notifier.pool, notifier.count
    stream = StreamBuffer(None, notifier.buffer_events)
    joined = False
    try:
        while not joined:
            if notifier.closed:
                raise Unavailable("the server is shutting down; reconnect with the cursor of the last event")
            # Catch up alone to a position between batches, where the final events end.
            while True:
                events: list[WalletEvent] = []
                cursor, caught_up = await _catch_up_all(notifier, cursor, events)
                for event in events:
                    yield event
                if caught_up:
                    break
            head = notifier.join_all(stream, cursor)
            if notifier.all_start_lo <= cursor.lo <= head.lo:
                # Behind the reader: read the gap with the reader's boundaries, then follow the buffer.
                if cursor.lo < head.lo:
                    gap = AllCursor(cursor.lo, head.lo, 0)
                    while True:
                        events, gap = await read_batch(pool, gap, None, count)
                        if not events:
                            break
                        for event in events:
                            yield event
                if head.hi is not None:
                    part = AllCursor(head.lo, head.hi, 0)
                    while part.event_id < head.event_id:
                        events, part = await read_batch(pool, part, head.event_id, count)
                        if not events:
                            break
                        for event in events:
                            yield event
                cursor, joined = head, True
            elif (
                head.lo < cursor.lo
                and head.hi is None
                and not await events_between(pool, head.lo, cursor.lo, count)
            ):
                # Ahead of the reader, but nothing lies between: the two positions are the same.
                cursor, joined = head, True
            else:
                # Ahead of the reader with events between (it has not read this notification yet), or
                # behind where it started: try again after its next round.
                notifier.leave(stream)
                await notifier.next_round(JOIN_WAIT_S)
        last = cursor.encode()
        while True:
            for event in await _next_from_buffer(notifier, stream, last):
                yield event
                last = event.cursor
    finally:
        notifier.leave(stream)


async def watch_events(
    pool: asyncpg.Pool, notifier: EventNotifier, company_id: str | None, raw_cursor: str
) -> AsyncIterator[WalletEvent]:
    """Every event after the cursor, then new ones as they commit, until the caller stops iterating."""
    cursor = parse_cursor(raw_cursor, company_id)
    if notifier.closed:
        raise Unavailable("the server is shutting down; reconnect with the cursor of the last event")
    if company_id is not None:
        assert isinstance(cursor, CompanyCursor)
        notifier.count.queries += 1
        exists = await pool.fetchval("select 1 from wallets where company_id = $1", company_id)
        if exists is None:
            raise CompanyNotFound(company_id)
        async for event in _watch_company(notifier, company_id, cursor):
            yield event
    else:
        assert isinstance(cursor, AllCursor)
        async for event in _watch_all(notifier, cursor):
            yield event
