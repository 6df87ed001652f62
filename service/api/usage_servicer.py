"""UsageService: a thin edge over the RecordUsage use case."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from consofta.billing.v1 import usage_pb2, usage_service_pb2, usage_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.convert import money, timestamp
from service.api.reporting_servicer import UsageReporting
from service.api.validation import (
    Violations,
    check_company_id,
    check_request_key,
    parse_occurred_at,
    parse_usage,
)
from service.app.record_usage import RecordUsageCommand, record_usage

_ENCODINGS = {
    None: usage_pb2.SMS_ENCODING_UNSPECIFIED,
    "gsm7": usage_pb2.SMS_ENCODING_GSM7,
    "ucs2": usage_pb2.SMS_ENCODING_UCS2,
}
_CALL_DIRECTIONS = {
    "outbound": usage_pb2.CALL_DIRECTION_OUTBOUND,
    "inbound": usage_pb2.CALL_DIRECTION_INBOUND,
}
_SMS_DIRECTIONS = {"outbound": usage_pb2.SMS_DIRECTION_OUTBOUND, "inbound": usage_pb2.SMS_DIRECTION_INBOUND}
_NUMBER_TYPES = {"local": usage_pb2.NUMBER_TYPE_LOCAL, "toll_free": usage_pb2.NUMBER_TYPE_TOLL_FREE}


def usage_of_row(row: asyncpg.Record) -> usage_pb2.Usage:
    """What was used, from a stored usage record. An SMS is echoed by its segment count."""
    kind = row["usage_type"]
    if kind == "email":
        return usage_pb2.Usage(email=usage_pb2.EmailUsage(count=row["quantity"]))
    if kind == "call":
        return usage_pb2.Usage(
            call=usage_pb2.CallUsage(
                direction=_CALL_DIRECTIONS[row["direction"]],
                number_type=_NUMBER_TYPES[row["number_type"]],
                duration_seconds=row["quantity"],
            )
        )
    return usage_pb2.Usage(
        sms=usage_pb2.SmsUsage(direction=_SMS_DIRECTIONS[row["direction"]], segments=row["quantity"])
    )


def usage_record_of_row(row: asyncpg.Record) -> usage_pb2.UsageRecord:
    return usage_pb2.UsageRecord(
        id=str(row["usage_record_id"]),
        company_id=row["company_id"],
        idempotency_key=row["idempotency_key"],
        usage=usage_of_row(row),
        price=usage_pb2.Price(
            billable_units=row["billable_units"],
            unit_price=money(row["unit_price_nanos"]),
            amount=money(row["amount_nanos"]),
            rate_card=row["rate_card"],
            rate_card_version=row["rate_card_version"],
            sms_encoding=_ENCODINGS[row["sms_encoding"]],
        ),
        occurred_at=timestamp(row["occurred_at"]),
        recorded_at=timestamp(row["recorded_at"]),
        ledger_sequence=row["ledger_sequence"],
    )


def parse_hold_id(v: Violations, value: str) -> uuid.UUID | None:
    """The optional hold to capture: empty for none, else the UUID AuthorizeUsage returned."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        v.add("hold_id", "must be a UUID, as returned by WalletService.AuthorizeUsage")
        return None


class UsageServicer(UsageReporting, usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def RecordUsage(
        self, request: usage_service_pb2.RecordUsageRequest, context: ServicerContext[Any, Any]
    ) -> usage_service_pb2.RecordUsageResponse:
        now = datetime.now(UTC)
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.idempotency_key, "idempotency_key")
        usage = parse_usage(v, request.usage)
        occurred_at = parse_occurred_at(v, request.HasField("occurred_at"), request.occurred_at, now)
        hold_id = parse_hold_id(v, request.hold_id)
        v.raise_if_any()
        assert usage is not None
        recorded = await record_usage(
            self._pool,
            RecordUsageCommand(
                request.company_id, request.idempotency_key, usage, occurred_at, now, hold_id=hold_id
            ),
        )
        row = recorded.record
        return usage_service_pb2.RecordUsageResponse(
            usage_record=usage_record_of_row(row),
            balance_after=money(row["balance_after_nanos"]),
            below_minimum=row["below_minimum"],
            replayed=recorded.replayed,
        )
