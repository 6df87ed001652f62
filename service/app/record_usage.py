"""The RecordUsage use case: meter, then price, lock, debit and append in one database round trip."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.app import idempotency, rows
from service.app.db_errors import raise_domain_error
from service.domain.ledger import UsageRecord
from service.domain.usage_kinds import Usage, fingerprint, kind_of, meter

RECORD_USAGE = "record_usage"
RECORD_USAGE_SQL = """
    select * from record_usage(
        p_usage_record_id => $1, p_company_id => $2, p_idempotency_key => $3, p_request_hash => $4,
        p_usage_type => $5, p_rate_key => $6, p_direction => $7, p_number_type => $8, p_quantity => $9,
        p_sms_encoding => $10, p_billable_units => $11, p_occurred_at => $12, p_hold_id => $13)
"""


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

    def request(self) -> idempotency.Request:
        # The hold is part of the request: the same key naming another hold is a reused key. Appended only
        # when set, so that a usage recorded without a hold keeps the fingerprint it always had.
        held: tuple[idempotency.Part, ...] = () if self.hold_id is None else ("hold", self.hold_id)
        parts = (self.company_id, *fingerprint(self.usage), self.occurred_at_given, *held)
        return idempotency.Request(
            RECORD_USAGE,
            self.company_id,
            self.idempotency_key,
            idempotency.fingerprint(*parts),  # type: ignore[arg-type]
            key_field="idempotency_key",
        )


@dataclass(frozen=True)
class RecordedUsage:
    record: UsageRecord
    replayed: bool


def _dimension(usage: Usage, name: str) -> str | None:
    value = getattr(usage, name, None)
    return None if value is None else str(value)


def sql_arguments(
    cmd: RecordUsageCommand, proposed_id: uuid.UUID, request: idempotency.Request | None = None
) -> tuple[object, ...]:
    """record_usage()'s arguments for the command, in RECORD_USAGE_SQL's order (record_usages() takes
    the same, one array each)."""
    metering = meter(cmd.usage)
    return (
        proposed_id,
        cmd.company_id,
        cmd.idempotency_key,
        (request or cmd.request()).fingerprint,
        kind_of(cmd.usage).name,
        metering.rate_key,
        _dimension(cmd.usage, "direction"),
        _dimension(cmd.usage, "number_type"),
        metering.quantity,
        None if metering.sms_encoding is None else metering.sms_encoding.value,
        metering.billable_units,
        cmd.occurred_at,
        cmd.hold_id,
    )


async def record_usage(pool: asyncpg.Pool, cmd: RecordUsageCommand) -> RecordedUsage:
    request = cmd.request()
    return await record_usage_prepared(pool, cmd, request, sql_arguments(cmd, uuid.uuid4(), request))


async def record_usage_prepared(
    pool: asyncpg.Pool, cmd: RecordUsageCommand, request: idempotency.Request, arguments: tuple[object, ...]
) -> RecordedUsage:
    """record_usage() for a command whose request and sql_arguments() are already built."""
    try:
        row = await pool.fetchrow(RECORD_USAGE_SQL, *arguments)
    except asyncpg.PostgresError as exc:
        raise_domain_error(exc, cmd.company_id, rate_key=str(arguments[5]), hold_id=cmd.hold_id)
    assert row is not None
    record = rows.usage_record(row)
    if row["usage_record_id"] == arguments[0]:
        return RecordedUsage(record, replayed=False)
    idempotency.check(request, RECORD_USAGE, row["request_hash"], usage_record_id=str(row["usage_record_id"]))
    return RecordedUsage(record, replayed=True)
