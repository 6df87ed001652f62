"""The RecordUsage use case: meter, then price, lock, debit and append in one database round trip."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.app.hashing import request_hash
from service.app.holds import raise_hold_error
from service.db.sqlstate import NUMERIC_VALUE_OUT_OF_RANGE
from service.domain.errors import AmountOutOfRange, CompanyNotFound, IdempotencyKeyReused, NoRateCard
from service.domain.pricing import meter
from service.domain.usage import CallUsage, EmailUsage, SmsUsage, Usage

_RECORD_USAGE_SQL = "select * from record_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"


@dataclass(frozen=True)
class RecordUsageCommand:
    company_id: str
    idempotency_key: str
    usage: Usage
    # None means "when the request arrived"; kept apart from `occurred_at` so a retry hashes the same.
    occurred_at_given: datetime | None
    received_at: datetime
    # A hold from AuthorizeUsage to capture with this debit.
    hold_id: uuid.UUID | None = None

    @property
    def occurred_at(self) -> datetime:
        return self.occurred_at_given or self.received_at


@dataclass(frozen=True)
class RecordedUsage:
    record: asyncpg.Record
    replayed: bool


def _fingerprint(cmd: RecordUsageCommand) -> bytes:
    usage = cmd.usage
    match usage:
        case EmailUsage(count=count):
            described: tuple[object, ...] = ("email", count)
        case CallUsage(direction=d, number_type=n, duration_seconds=s):
            described = ("call", d, n, s)
        case SmsUsage(direction=d, segments=segments, body=body):
            body_digest = (
                None if body is None else hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
            )
            described = ("sms", d, segments, body_digest)
    occurred = None if cmd.occurred_at_given is None else cmd.occurred_at_given.isoformat()
    # The hold is part of the request: the same key naming another hold is a reused key. Appended only
    # when set, so records stored before holds existed still replay.
    held = () if cmd.hold_id is None else ("hold", str(cmd.hold_id))
    return request_hash(cmd.company_id, *described, occurred, *held)


def _quantity(usage: Usage, billable_units: int) -> int:
    match usage:
        case EmailUsage(count=count):
            return count
        case CallUsage(duration_seconds=seconds):
            return seconds
        case SmsUsage():
            return billable_units  # segments, as given or as counted from the body


async def record_usage(pool: asyncpg.Pool, cmd: RecordUsageCommand) -> RecordedUsage:
    metering = meter(cmd.usage)
    fingerprint = _fingerprint(cmd)
    proposed_id = uuid.uuid4()
    usage = cmd.usage
    direction = getattr(usage, "direction", None)
    number_type = getattr(usage, "number_type", None)
    try:
        row = await pool.fetchrow(
            _RECORD_USAGE_SQL,
            proposed_id,
            cmd.company_id,
            cmd.idempotency_key,
            fingerprint,
            usage.usage_type.value,
            metering.rate_key.value,
            None if direction is None else direction.value,
            None if number_type is None else number_type.value,
            _quantity(usage, metering.billable_units),
            None if metering.sms_encoding is None else metering.sms_encoding.value,
            metering.billable_units,
            cmd.occurred_at,
            cmd.hold_id,
        )
    except asyncpg.PostgresError as exc:
        if cmd.hold_id is not None:
            raise_hold_error(exc, cmd.company_id, cmd.hold_id)
        if exc.sqlstate == "BL404":
            raise CompanyNotFound(cmd.company_id) from None
        if exc.sqlstate == "BL412":
            raise NoRateCard(str(exc), metadata={"rate_key": metering.rate_key.value}) from None
        if exc.sqlstate == NUMERIC_VALUE_OUT_OF_RANGE:
            raise AmountOutOfRange() from None
        raise
    assert row is not None
    if row["usage_record_id"] == proposed_id:
        return RecordedUsage(row, replayed=False)
    if bytes(row["request_hash"]) != fingerprint:
        raise IdempotencyKeyReused(
            f"idempotency key {cmd.idempotency_key!r} was already used for a different usage of company "
            f"{cmd.company_id!r}; nothing was recorded",
            metadata={
                "company_id": cmd.company_id,
                "idempotency_key": cmd.idempotency_key,
                "usage_record_id": str(row["usage_record_id"]),
            },
        )
    return RecordedUsage(row, replayed=True)
