"""Applying one batch of queued usages: rounds of `record_usages()`, and each item's own result.

A (company, key) or a hold appears at most once in a `record_usages()` call. A repeat of a key is judged
against the first item's stored record here (a replay, or IDEMPOTENCY_KEY_REUSED), or, when the first item
failed, applied in the next round; a second item naming the same hold waits for the next round too, which
sees the hold captured (or not). The SQL defers items after a balance overflow the same way.

One item's error (unknown company, no rate, a bad hold, an amount out of range) is that item's own. An
unexpected error of the whole statement applies the round's items one by one instead (`record_usage()`,
each in its own transaction), so that it stays with the item that caused it. A transient failure of the
whole round (serialization failure, deadlock, a lost connection) rolls it all back and retries it a
bounded number of times, with the same proposed ids, so that a commit whose answer was lost is recognised
as this very request; then the callers get UNAVAILABLE (retry with the same key).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from service.app import idempotency, rows
from service.app.db_errors import domain_error
from service.app.record_usage import RECORD_USAGE, RecordedUsage, RecordUsageCommand, record_usage_prepared
from service.db.connectivity import is_unreachable
from service.domain.errors import BillingError, DatabaseUnavailable, DeadlineExceeded, UsageNotRecorded

log = structlog.get_logger(__name__)

RECORD_USAGES_SQL = """
    select item, outcome, error_state, error_message, record from record_usages(
        p_usage_record_ids => $1, p_company_ids => $2, p_idempotency_keys => $3, p_request_hashes => $4,
        p_usage_types => $5, p_rate_keys => $6, p_directions => $7, p_number_types => $8,
        p_quantities => $9, p_sms_encodings => $10, p_billable_units => $11, p_occurred_ats => $12,
        p_hold_ids => $13)
"""

# Errors after which the same round can succeed: nothing of it was applied (or, for a lost connection,
# perhaps all of it, which the retry recognises by the proposed ids).
TRANSIENT: tuple[type[BaseException], ...] = (
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
class Pending:
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


class FlushConnection:
    """The pool connection one flusher holds while it runs: taken at its first round and given back when
    its queue is empty or the connection failed, so that the pool's reset query runs once per run of the
    flusher rather than once per batch."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: PoolConnectionProxy[Record] | None = None

    async def get(self) -> PoolConnectionProxy[Record]:
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._pool.acquire()
        return conn

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await self._pool.release(conn)
        except Exception as error:  # the server killed it meanwhile: asyncpg has given its slot back
            log.warning("flusher connection lost on release", error=repr(error))


class Rounds:
    """Applies batches; `on_round(n)` hears the size of each `record_usages()` call."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retries: int,
        retry_backoff_s: float,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        self.pool = pool
        self._retries = retries
        self._retry_backoff_s = retry_backoff_s
        self._on_round = on_round

    async def apply(self, batch: list[Pending], connection: FlushConnection) -> None:
        """Settle every item of `batch`, in as many rounds as its repeated keys and holds need."""
        for position, pending in enumerate(batch):
            pending.position = position
        todo = batch
        while todo:
            first: list[Pending] = []
            twins: list[tuple[Pending, Pending]] = []
            later: list[Pending] = []
            keys: dict[tuple[str, str], Pending] = {}
            holds: set[uuid.UUID] = set()
            for pending in todo:
                cmd = pending.cmd
                key = (cmd.company_id, cmd.idempotency_key)
                twin = keys.get(key)
                if twin is not None:
                    twins.append((pending, twin))
                elif cmd.hold_id is not None and cmd.hold_id in holds:
                    later.append(pending)
                else:
                    keys[key] = pending
                    if cmd.hold_id is not None:
                        holds.add(cmd.hold_id)
                    first.append(pending)
            deferred = await self._round(first, connection)
            for pending, twin in twins:
                if isinstance(twin.result, RecordedUsage):
                    settle(pending, _judge_twin(pending, twin))
                else:  # the first failed or was deferred: this one is tried on its own merits
                    later.append(pending)
            for pending in first:
                if pending.result is not None:
                    settle(pending, pending.result)
            todo = sorted(deferred + later, key=_position) if deferred or later else []

    async def _round(self, items: list[Pending], connection: FlushConnection) -> list[Pending]:
        """Apply `items` in one transaction; set each one's result; return those deferred."""
        if not items:
            return []
        if self._on_round is not None:
            self._on_round(len(items))
        columns = [list(column) for column in zip(*(pending.arguments for pending in items), strict=True)]
        attempt = 0
        while True:
            try:
                conn = await connection.get()
                records = await conn.fetch(RECORD_USAGES_SQL, *columns)
                break
            except TRANSIENT as exc:
                # The connection may be broken: the next attempt takes a fresh one.
                await connection.release()
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
        deferred: list[Pending] = []
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
                pending.result = _recorded(pending, row["record"])
        return deferred

    async def _one_by_one(self, items: list[Pending]) -> None:
        for pending in items:
            try:
                pending.result = await record_usage_prepared(
                    self.pool, pending.cmd, pending.request, pending.arguments
                )
            except BillingError as error:
                pending.result = error
            except TRANSIENT as exc:
                pending.result = _not_applied(exc)


def _not_applied(exc: BaseException) -> BillingError:
    """What a caller hears when the retries ran out: the same DATABASE_UNAVAILABLE as every other RPC
    when the database cannot be reached, DEADLINE_EXCEEDED when it cancelled the statement at its time
    limit, else that this usage was not recorded."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return DeadlineExceeded(
            "the database cancelled the statement at its time limit; nothing was recorded"
        )
    if is_unreachable(exc):
        return DatabaseUnavailable()
    return UsageNotRecorded(
        "the database did not answer; nothing was recorded. Retry with the same idempotency key"
    )


def _position(pending: Pending) -> int:
    return pending.position


def _recorded(pending: Pending, stored: Any) -> RecordedUsage | BillingError:
    record = rows.usage_record(stored)
    pending.stored_hash = bytes(stored["request_hash"])
    if stored["usage_record_id"] == pending.arguments[0]:
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


def _judge_twin(pending: Pending, first: Pending) -> RecordedUsage | BillingError:
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


def settle(pending: Pending, result: RecordedUsage | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
