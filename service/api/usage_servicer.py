"""UsageService: a thin edge over the RecordUsage use case and the usage reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from consofta.billing.v1 import usage_service_pb2, usage_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.usage_reporting import UsageReporting
from service.api.validation import Violations, check_company_id, check_request_key, parse_occurred_at
from service.api.wire.money import money
from service.api.wire.records import usage_record_message
from service.api.wire.usage import parse_usage
from service.app.record_usage import RecordUsageCommand, record_usage
from service.domain.usage_kinds import kind_of
from service.metrics import observe_usage


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
        record = recorded.record
        if not recorded.replayed:
            observe_usage(kind_of(record.usage).name, record.amount_nanos)
        return usage_service_pb2.RecordUsageResponse(
            usage_record=usage_record_message(record),
            balance_after=money(record.balance_after_nanos),
            below_minimum=record.below_minimum,
            replayed=recorded.replayed,
        )
