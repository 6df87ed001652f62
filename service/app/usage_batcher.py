"""Group commit for RecordUsage: concurrent usages share one transaction and one round trip.

A call puts its usages in a bounded queue and waits for their results. A flusher takes what is queued (at
most `max_batch`) and applies it with one `record_usages()` call, the set-based form of `record_usage()`;
while it runs, new calls queue up and form the next batch. Nothing sleeps to wait for a batch to fill: a
call that finds an idle flusher is applied at once. At most `max_flushes` flushers run at a time.

What each caller gets is exactly what one `record_usage()` call after another would give it:
* A (company, key) or a hold appears at most once in a `record_usages()` call. A repeat of a key is
  judged against the first item's stored record here (a replay, or IDEMPOTENCY_KEY_REUSED), or, when the
  first item failed, applied in the next round; a second item naming the same hold waits for the next
  round too, which sees the hold captured (or not). The SQL defers items after a balance overflow the
  same way.
* One item's error (unknown company, no rate, a bad hold, an amount out of range) is that item's own.
  An unexpected error of the whole statement applies the round's items one by one instead
  (`record_usage()`, each in its own transaction), so that it stays with the item that caused it.
* A transient failure of the whole batch (serialization failure, deadlock, a lost connection) rolls it
  all back and retries it a bounded number of times, with the same proposed ids, so that a commit whose
  answer was lost is recognised as this very request; then the callers get UNAVAILABLE (retry with the
  same key). A result is given only after the commit that contains it.
* Backpressure: a call that would overfill the queue gets RESOURCE_EXHAUSTED at once; a call whose
  deadline passed while it waited, or whose caller went away, is not started.
* `stop` applies what is queued within the grace period and answers the rest UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from service.app import idempotency, rows
from service.app.db_errors import domain_error
from service.app.record_usage import (
    RECORD_USAGE,
    RecordedUsage,
    RecordUsageCommand,
    record_usage_prepared,
    sql_arguments,
)
from service.db.connectivity import is_unreachable
from service.domain.errors import BillingError, DatabaseUnavailable, UsageNotRecorded, UsageQueueFull

log = structlog.get_logger(__name__)

RECORD_USAGES_SQL = """
    select item, outcome, error_state, error_message, record from record_usages(
        p_usage_record_ids => $1, p_company_ids => $2, p_idempotency_keys => $3, p_request_hashes => $4,
        p_usage_types => $5, p_rate_keys => $6, p_directions => $7, p_number_types => $8,
        p_quantities => $9, p_sms_encodings => $10, p_billable_units => $11, p_occurred_ats => $12,
        p_hold_ids => $13)
"""

# Errors after which the same batch can succeed: nothing of it was applied (or, for a lost connection,
# perhaps all of it, which the retry recognises by the proposed ids).
_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionFailureError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


@dataclass(slots=True, eq=False)
class _Pending:
    """One usage waiting for its result."""

    cmd: RecordUsageCommand
    request: idempotency.Request
    arguments: tuple[object, ...]
    future: asyncio.Future[RecordedUsage]
    # loop.time() after which the caller no longer waits; None: no deadline.
    deadline: float | None
    # Its place in the batch, which orders the rounds like the queue.
    position: int = 0
    # The outcome of its round, and the request_hash of the record it got (for its key twins).
    result: RecordedUsage | BillingError | None = field(default=None)
    stored_hash: bytes = b""

    @property
    def proposed_id(self) -> object:
        return self.arguments[0]


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
    ) -> None:
        self._pool = pool
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_flushes = max_flushes
        self._retries = retries
        self._retry_backoff_s = retry_backoff_s
        self._queue: deque[_Pending] = deque()
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
            raise UsageNotRecorded("the server is shutting down; retry with the same idempotency key")
        if len(self._queue) + len(cmds) > self.max_queue:
            raise UsageQueueFull(len(self._queue))
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        futures = []
        for cmd in cmds:
            request = cmd.request()
            future: asyncio.Future[RecordedUsage] = loop.create_future()
            self._queue.append(
                _Pending(cmd, request, sql_arguments(cmd, uuid.uuid4(), request), future, deadline)
            )
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
        results = await asyncio.gather(*self.submit(cmds, timeout_s), return_exceptions=True)
        out: list[RecordedUsage | BillingError] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, BillingError):
                raise result
            out.append(result)
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
            _settle(
                self._queue.popleft(),
                UsageNotRecorded("the server is shutting down; retry with the same idempotency key"),
            )

    # --- the flusher ----------------------------------------------------------------------------------

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        now = asyncio.get_running_loop().time()
        while self._queue and len(batch) < self.max_batch:
            pending = self._queue.popleft()
            if pending.future.done():  # the caller went away (cancelled): not started
                continue
            if pending.deadline is not None and pending.deadline <= now:
                _settle(
                    pending,
                    UsageNotRecorded(
                        "the deadline passed before the usage was applied; nothing was recorded"
                    ),
                )
                continue
            batch.append(pending)
        return batch

    async def _flush(self) -> None:
        while self._queue:
            batch = self._take()
            if batch:
                try:
                    await self._apply(batch)
                except asyncio.CancelledError:
                    for pending in batch:
                        _settle(
                            pending,
                            UsageNotRecorded(
                                "the server is shutting down; retry with the same idempotency key"
                            ),
                        )
                    raise
                except Exception as exc:  # a fault of ours: every caller hears of it, none waits forever
                    log.exception("usage batch failed", usages=len(batch))
                    for pending in batch:
                        _settle(pending, exc)

    async def _apply(self, batch: list[_Pending]) -> None:
        for position, pending in enumerate(batch):
            pending.position = position
        todo = batch
        while todo:
            first: list[_Pending] = []
            twins: list[tuple[_Pending, _Pending]] = []
            later: list[_Pending] = []
            keys: dict[tuple[str, str], _Pending] = {}
            holds: set[uuid.UUID] = set()
            for pending in todo:
                key = (pending.cmd.company_id, pending.cmd.idempotency_key)
                twin = keys.get(key)
                if twin is not None:
                    twins.append((pending, twin))
                elif pending.cmd.hold_id is not None and pending.cmd.hold_id in holds:
                    later.append(pending)
                else:
                    keys[key] = pending
                    if pending.cmd.hold_id is not None:
                        holds.add(pending.cmd.hold_id)
                    first.append(pending)
            deferred = await self._round(first)
            for pending, twin in twins:
                if isinstance(twin.result, RecordedUsage):
                    _settle(pending, _judge_twin(pending, twin))
                else:  # the first failed or was deferred: this one is tried on its own merits
                    later.append(pending)
            for pending in first:
                if pending.result is not None:
                    _settle(pending, pending.result)
            todo = sorted(deferred + later, key=_position)

    async def _round(self, items: list[_Pending]) -> list[_Pending]:
        """Apply `items` in one transaction; set each one's result; return those deferred."""
        if not items:
            return []
        attempt = 0
        while True:
            try:
                async with self._pool.acquire() as conn:
                    records = await conn.fetch(RECORD_USAGES_SQL, *_columns(items))
                break
            except _TRANSIENT as exc:
                attempt += 1
                if attempt > self._retries:
                    log.warning("usage batch not applied", usages=len(items), error=type(exc).__name__)
                    for pending in items:
                        pending.result = _not_applied(exc)
                    return []
                await asyncio.sleep(self._retry_backoff_s * attempt)
            except asyncpg.PostgresError as exc:
                log.warning("usage batch applied one by one", usages=len(items), sqlstate=exc.sqlstate)
                await self._one_by_one(items)
                return []
        deferred: list[_Pending] = []
        for pending, row in zip(items, records, strict=True):
            outcome = row["outcome"]
            if outcome == "deferred":
                deferred.append(pending)
            elif outcome == "failed":
                cmd = pending.cmd
                error = domain_error(
                    row["error_state"],
                    row["error_message"],
                    cmd.company_id,
                    rate_key=str(pending.arguments[5]),
                    hold_id=cmd.hold_id,
                )
                pending.result = error or UsageNotRecorded(f"usage not recorded ({row['error_state']})")
            else:
                stored = row["record"]
                pending.result = _recorded(pending, stored)
        return deferred

    async def _one_by_one(self, items: list[_Pending]) -> None:
        for pending in items:
            try:
                pending.result = await record_usage_prepared(
                    self._pool, pending.cmd, pending.request, pending.arguments
                )
            except BillingError as error:
                pending.result = error
            except _TRANSIENT as exc:
                pending.result = _not_applied(exc)


def _not_applied(exc: BaseException) -> BillingError:
    """What a caller hears when the retries ran out: the same DATABASE_UNAVAILABLE as every other RPC
    when the database cannot be reached, else that this usage was not recorded."""
    if is_unreachable(exc):
        return DatabaseUnavailable()
    return UsageNotRecorded(
        "the database did not answer; nothing was recorded. Retry with the same idempotency key"
    )


def _position(pending: _Pending) -> int:
    return pending.position


def _columns(items: list[_Pending]) -> list[list[Any]]:
    return [list(column) for column in zip(*(pending.arguments for pending in items), strict=True)]


def _recorded(pending: _Pending, stored: Any) -> RecordedUsage | BillingError:
    record = rows.usage_record(stored)
    pending.stored_hash = bytes(stored["request_hash"])
    if stored["usage_record_id"] == pending.proposed_id:
        return RecordedUsage(record, replayed=False)
    try:
        idempotency.check(
            pending.request,
            RECORD_USAGE,
            stored["request_hash"],
            usage_record_id=str(stored["usage_record_id"]),
        )
    except BillingError as error:
        return error
    return RecordedUsage(record, replayed=True)


def _judge_twin(pending: _Pending, first: _Pending) -> RecordedUsage | BillingError:
    """A repeat of a key in one batch, after the first item with that key got its record."""
    assert isinstance(first.result, RecordedUsage)
    record = first.result.record
    try:
        idempotency.check(
            pending.request, RECORD_USAGE, first.stored_hash, usage_record_id=str(record.usage_record_id)
        )
    except BillingError as error:
        return error
    return RecordedUsage(record, replayed=True)


def _settle(pending: _Pending, result: RecordedUsage | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
