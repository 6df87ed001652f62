"""Group commit for RecordUsage: concurrent usages share one transaction and one round trip.

A call puts its usages in a bounded queue and waits for their results. A flusher takes what is queued (at
most `max_batch`) and applies it with one `record_usages()` call, the set-based form of `record_usage()`
(`service/app/usage_batch_rounds.py`); while it runs, new calls queue up and form the next batch. Nothing
sleeps to wait for a batch to fill: a call that finds an idle flusher is applied at once. At most
`max_flushes` flushers run at a time, each on one pool connection that it holds while it has work.

What each caller gets is exactly what one `record_usage()` call after another would give it (the rules
for repeated keys and holds within a batch, per-item errors and transient failures are in
`usage_batch_rounds`). A result is given only after the commit that contains it.
* Backpressure: a call that would overfill the queue gets RESOURCE_EXHAUSTED at once; a call whose
  deadline passed while it waited, or whose caller went away, is not started.
* `stop` applies what is queued within the grace period and answers the rest UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg
import structlog

from service.app.proposed_ids import proposed_ids
from service.app.record_usage import RecordedUsage, RecordUsageCommand, sql_arguments
from service.app.usage_batch_rounds import FlushConnection, Pending, Rounds, settle
from service.domain.errors import BillingError, UsageNotRecorded, UsageQueueFull

log = structlog.get_logger(__name__)

_SHUTTING_DOWN = "the server is shutting down; retry with the same idempotency key"


class UsageBatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 1000,
        max_queue: int = 20_000,
        max_flushes: int = 2,
        retries: int = 3,
        retry_backoff_s: float = 0.05,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_flushes = max_flushes
        self._rounds = Rounds(pool, retries=retries, retry_backoff_s=retry_backoff_s, on_round=on_round)
        self._queue: deque[Pending] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self, cmds: Sequence[RecordUsageCommand], timeout_s: float | None = None
    ) -> list[asyncio.Future[RecordedUsage]]:
        """Queue the usages, all or none; their futures resolve after the commit that holds them."""
        if self._stopping:
            raise UsageNotRecorded(_SHUTTING_DOWN)
        queue = self._queue
        if len(queue) + len(cmds) > self.max_queue:
            raise UsageQueueFull(len(queue))
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        futures = []
        for cmd, proposed_id in zip(cmds, proposed_ids(len(cmds)), strict=True):
            request = cmd.request()
            future: asyncio.Future[RecordedUsage] = loop.create_future()
            queue.append(Pending(cmd, request, sql_arguments(cmd, proposed_id, request), future, deadline))
            futures.append(future)
        if len(self._flushers) < self.max_flushes:
            task = loop.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return futures

    async def record(self, cmd: RecordUsageCommand, timeout_s: float | None = None) -> RecordedUsage:
        return await self.submit((cmd,), timeout_s)[0]

    async def record_many(
        self, cmds: Sequence[RecordUsageCommand], timeout_s: float | None = None
    ) -> list[RecordedUsage | BillingError]:
        """Each usage's result or its own error, in order."""
        futures = self.submit(cmds, timeout_s)
        out: list[RecordedUsage | BillingError] = []
        # One await after another rather than gather(): the items are settled together, so after the
        # first the others are done and cost no suspension, and no wrapper or callback per item.
        try:
            for future in futures:
                try:
                    out.append(await future)
                except BillingError as error:
                    out.append(error)
        except BaseException:
            # The caller went away (or a fault of ours): the items not yet applied are not started, and
            # the errors of those already settled are taken, as gather() would.
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()
            raise
        return out

    async def stop(self, grace_s: float) -> None:
        """Take no more usages, apply the queued ones within `grace_s`, answer the rest UNAVAILABLE."""
        self._stopping = True
        if self._flushers:
            _, late = await asyncio.wait(set(self._flushers), timeout=max(grace_s, 0.0))
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        while self._queue:
            settle(self._queue.popleft(), UsageNotRecorded(_SHUTTING_DOWN))

    # --- the flusher ----------------------------------------------------------------------------------

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        now = asyncio.get_running_loop().time()
        queue = self._queue
        while queue and len(batch) < self.max_batch:
            pending = queue.popleft()
            if pending.future.done():  # the caller went away (cancelled): not started
                continue
            if pending.deadline is not None and pending.deadline <= now:
                settle(
                    pending,
                    UsageNotRecorded(
                        "the deadline passed before the usage was applied; nothing was recorded"
                    ),
                )
                continue
            batch.append(pending)
        return batch

    async def _flush(self) -> None:
        connection = FlushConnection(self._rounds.pool)
        try:
            while True:
                while self._queue:
                    batch = self._take()
                    if batch:
                        await self._apply(batch, connection)
                # Giving the connection back waits: usages queued meanwhile found this flusher still
                # counted, and started none of their own.
                await connection.release()
                if not self._queue:
                    # Uncounted before it returns, with no await in between: a usage queued from now on
                    # starts a flusher of its own.
                    self._flushers.discard(asyncio.current_task())
                    return
        finally:
            await connection.release()

    async def _apply(self, batch: list[Pending], connection: FlushConnection) -> None:
        try:
            await self._rounds.apply(batch, connection)
        except asyncio.CancelledError:
            for pending in batch:
                settle(pending, UsageNotRecorded(_SHUTTING_DOWN))
            raise
        except Exception as exc:  # a fault of ours: every caller hears of it, none waits forever
            log.exception("usage batch failed", usages=len(batch))
            for pending in batch:
                settle(pending, exc)
