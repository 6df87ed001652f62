"""The shared event reader of WatchWalletEvents: one per process, woken by LISTEN, fanned out in memory.

How streams catch up, join it and leave it is in `service.app.event_streams`. The reader never waits for a
stream: it appends to each stream's bounded buffer, and a buffer past its capacity marks its stream as
fallen behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable

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
    read_all_events,
    read_company_events,
)
from service.db.listener import Listener

log = structlog.get_logger(__name__)

# After an error the reader retries after this long (the database may be restarting).
READER_RETRY_S = 1.0


class StreamBuffer:
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
        self._company_streams: dict[str, set[StreamBuffer]] = {}
        # The sequence up to which the reader has handed out each followed company's events.
        self._company_heads: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._all_streams: set[StreamBuffer] = set()
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

    def _every_stream(self) -> Iterable[StreamBuffer]:
        yield from self._all_streams
        for streams in self._company_streams.values():
            yield from streams

    @staticmethod
    def _wake_streams(streams: Iterable[StreamBuffer]) -> None:
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

    def join_company(self, stream: StreamBuffer, sequence: int) -> int:
        """Register `stream` for its company; returns the reader's sequence (its buffer gets what follows)."""
        company_id = stream.company_id
        assert company_id is not None
        head = self._company_heads.setdefault(company_id, sequence)
        self._company_streams.setdefault(company_id, set()).add(stream)
        return head

    def join_all(self, stream: StreamBuffer, own: AllCursor) -> AllCursor:
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

    def leave(self, stream: StreamBuffer) -> None:
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
