"""The RecordUsage use case: meter, then price, lock, debit and append in one database round trip."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.app.hashing import request_hash
from service.domain.errors import CompanyNotFound, IdempotencyKeyReused, NoRateCard
from service.domain.pricing import meter
from service.domain.usage import CallUsage, EmailUsage, SmsUsage, Usage

_RECORD_USAGE_SQL = "select * from record_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"


@dataclass(frozen=True)
class RecordUsageCommand:
    company_id: str
    idempotency_key: str
    usage: Usage
    # None means "when the request arrived"; kept apart from `occurred_at` so a retry hashes the same.
    occurred_at_given: datetime | None
    received_at: datetime

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
    return request_hash(cmd.company_id, *described, occurred)


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
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "BL404":
            raise CompanyNotFound(cmd.company_id) from None
        if exc.sqlstate == "BL412":
            raise NoRateCard(str(exc), metadata={"rate_key": metering.rate_key.value}) from None
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
