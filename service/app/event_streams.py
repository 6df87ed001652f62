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
from collections import deque
from collections.abc import AsyncIterator, Iterable

import asyncpg
import structlog

from service.app.events import (
    CHANNEL,
    HELD_BACK_RECHECK_S,
    PAGE_SIZE,
    SAFETY_RECHECK_S,
    AllCursor,
    CompanyCursor,
    QueryCount,
    WalletEvent,
    events_between,
    parse_cursor,
    read_all_events,
    read_batch,
    read_company_events,
)
from service.db.listener import Listener
from service.domain.errors import CompanyNotFound, StreamFellBehind, Unavailable

log = structlog.get_logger(__name__)

# How long a joining all-companies stream that is ahead of the shared reader waits for its next round.
JOIN_WAIT_S = 1.0
# After an error the reader retries after this long (the database may be restarting).
READER_RETRY_S = 1.0


class _Buffer:
    """One stream's queue of events from the shared reader, bounded by `capacity`."""

    def __init__(self, company_id: str | None, capacity: int) -> None:
        self.company_id = company_id
        self.capacity = capacity
        self.events: deque[WalletEvent] = deque()
        self.woken = asyncio.Event()
        self.overflowed = False

    def offer(self, events: list[WalletEvent]) -> None:
        if self.overflowed or not events:
            return
        if len(self.events) + len(events) > self.capacity:
            # Fallen behind: the stream ends at its next step; the queue is dropped to free the memory.
            self.overflowed = True
            self.events.clear()
        else:
            self.events.extend(events)
        self.woken.set()


class EventNotifier:
    """The process's one event reader: LISTEN, read once per round, fan out to the streams' buffers."""

    def __init__(self, database_url: str, pool: asyncpg.Pool, buffer_events: int = 2000) -> None:
        self.pool = pool
        self.buffer_events = buffer_events
        # Every statement the event streams send, the shared reader's and the streams' own catch-up.
        self.count = QueryCount()
        self.rounds = 0
        self.closed = False
        self._listener = Listener(
            database_url,
            (CHANNEL,),
            self._on_notify,
            self._wake_all,
            application_name="consofta-billing-listen",
        )
        self._company_streams: dict[str, set[_Buffer]] = {}
        # The sequence up to which the reader has handed out each followed company's events.
        self._company_heads: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._all_streams: set[_Buffer] = set()
        # The reader's all-companies position, and where it started (None: no all-companies stream).
        self._all_head: AllCursor | None = None
        self._all_start_lo = 0
        self._all_dirty = False
        self._all_held_back = False
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def stream_count(self) -> int:
        return len(self._all_streams) + sum(len(s) for s in self._company_streams.values())

    async def start(self) -> None:
        await self._listener.start()
        self._task = asyncio.create_task(self._run(), name="wallet-event-reader")

    async def close(self) -> None:
        self.closed = True
        self._wake_streams(self._every_stream())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._listener.close()

    # --- waking ---------------------------------------------------------------------------------------

    def _on_notify(self, _channel: str, payload: str) -> None:
        company_id = payload.rsplit(":", 1)[0]
        if company_id in self._company_streams:
            self._dirty.add(company_id)
        self._all_dirty = True
        self._wake.set()

    def _wake_all(self) -> None:
        """Notifications may have been lost (the LISTEN connection came back): re-read everything."""
        self._dirty.update(self._company_streams)
        self._all_dirty = True
        self._wake.set()

    def _every_stream(self) -> Iterable[_Buffer]:
        yield from self._all_streams
        for streams in self._company_streams.values():
            yield from streams

    @staticmethod
    def _wake_streams(streams: Iterable[_Buffer]) -> None:
        for stream in streams:
            stream.woken.set()

    # --- the reader -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            recheck_s = HELD_BACK_RECHECK_S if self._all_streams and self._all_held_back else SAFETY_RECHECK_S
            try:
                await asyncio.wait_for(self._wake.wait(), recheck_s)
            except TimeoutError:
                # Held-back events are re-checked (an old transaction's end sends no notification); and
                # now and then everything is, in case a notification was lost.
                if not (self._all_streams and self._all_held_back):
                    self._dirty.update(self._company_streams)
                self._all_dirty = True
            self._wake.clear()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading wallet events failed; retrying")
                self._wake_all()
                await asyncio.sleep(READER_RETRY_S)
            self.rounds += 1
            done, self._round_done = self._round_done, asyncio.Event()
            done.set()

    async def _round(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for company_id in dirty:
            await self._pump_company(company_id)
        if self._all_dirty and self._all_head is not None:
            self._all_dirty = False
            await self._pump_all()

    async def _pump_company(self, company_id: str) -> None:
        while company_id in self._company_heads:
            head = self._company_heads[company_id]
            events = await read_company_events(self.pool, CompanyCursor(company_id, head), self.count)
            if self._company_heads.get(company_id) != head:
                continue  # every stream of the company left (and maybe another came) meanwhile
            if events:
                # Head and hand-out together, with no await between: a stream registering now sees both.
                self._company_heads[company_id] = events[-1].sequence
                for stream in self._company_streams.get(company_id, ()):
                    stream.offer(events)
            if len(events) < PAGE_SIZE:
                return
            await asyncio.sleep(0)  # a long backlog: let the streams write between pages

    async def _pump_all(self) -> None:
        while self._all_head is not None:
            head = self._all_head
            events, after, held_back = await read_all_events(self.pool, head, self.count)
            if self._all_head is not head:
                continue  # the last all-companies stream left meanwhile
            self._all_head, self._all_held_back = after, held_back
            for stream in self._all_streams:
                stream.offer(events)
            if not events:
                return
            await asyncio.sleep(0)

    async def next_round(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._round_done.wait(), timeout_s)

    # --- joining and leaving --------------------------------------------------------------------------

    def join_company(self, stream: _Buffer, sequence: int) -> int:
        """Register `stream` for its company; returns the reader's sequence (its buffer gets what follows)."""
        company_id = stream.company_id
        assert company_id is not None
        head = self._company_heads.setdefault(company_id, sequence)
        self._company_streams.setdefault(company_id, set()).add(stream)
        return head

    def join_all(self, stream: _Buffer, own: AllCursor) -> AllCursor:
        """Register an all-companies stream caught up at `own`; returns the reader's position."""
        # What an earlier, abandoned registration collected predates `own`: it would come twice.
        stream.events.clear()
        stream.overflowed = False
        if self._all_head is None:
            # The first one: the reader starts where this stream is, and reads at once, so that it learns
            # whether events are held back there (then it re-checks every HELD_BACK_RECHECK_S).
            self._all_head, self._all_start_lo = own, own.lo
            self._all_dirty = True
            self._wake.set()
        self._all_streams.add(stream)
        return self._all_head

    def leave(self, stream: _Buffer) -> None:
        if stream.company_id is None:
            self._all_streams.discard(stream)
            if not self._all_streams:
                self._all_head = None
            return
        streams = self._company_streams.get(stream.company_id)
        if streams is None:
            return
        streams.discard(stream)
        if not streams:
            del self._company_streams[stream.company_id]
            self._company_heads.pop(stream.company_id, None)

    @property
    def all_start_lo(self) -> int:
        return self._all_start_lo


# --- one stream -------------------------------------------------------------------------------------------


async def _next_from_buffer(notifier: EventNotifier, stream: _Buffer, last_cursor: str) -> list[WalletEvent]:
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
    stream = _Buffer(company_id, notifier.buffer_events)
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
    stream = _Buffer(None, notifier.buffer_events)
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
