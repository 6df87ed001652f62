"""UsageService: a thin edge over the RecordUsage use case (through the usage batcher) and the reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from consofta.billing.v1 import usage_service_pb2, usage_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.errors import status_message
from service.api.usage_reporting import UsageReporting
from service.api.validation import Violations, check_company_id, check_request_key, parse_occurred_at
from service.api.wire.money import set_money
from service.api.wire.records import set_usage_record
from service.api.wire.usage import parse_usage
from service.app.record_usage import RecordedUsage, RecordUsageCommand
from service.app.usage_batcher import UsageBatcher
from service.domain.errors import BillingError, InvalidArgument
from service.domain.usage_kinds import kind_of
from service.metrics import observe_usage

MAX_BATCH_ITEMS = 1000


def parse_hold_id(v: Violations, value: str) -> uuid.UUID | None:
    """The optional hold to capture: empty for none, else the UUID AuthorizeUsage returned."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        v.add("hold_id", "must be a UUID, as returned by WalletService.AuthorizeUsage")
        return None


def record_usage_command(request: usage_service_pb2.RecordUsageRequest, now: datetime) -> RecordUsageCommand:
    """The command a RecordUsage request (or a batch item) stands for; InvalidArgument names each bad
    field."""
    v = Violations()
    check_company_id(v, request.company_id)
    check_request_key(v, request.idempotency_key, "idempotency_key")
    usage = parse_usage(v, request.usage)
    occurred_at = parse_occurred_at(v, request.HasField("occurred_at"), request.occurred_at, now)
    hold_id = parse_hold_id(v, request.hold_id)
    v.raise_if_any()
    assert usage is not None
    return RecordUsageCommand(
        request.company_id, request.idempotency_key, usage, occurred_at, now, hold_id=hold_id
    )


def set_record_usage_response(target: usage_service_pb2.RecordUsageResponse, recorded: RecordedUsage) -> None:
    """Writes the answer for `recorded` in place: a batch writes each straight into its result slot."""
    record = recorded.record
    if not recorded.replayed:
        observe_usage(kind_of(record.usage).name, record.amount_nanos)
    set_usage_record(target.usage_record, record)
    set_money(target.balance_after, record.balance_after_nanos)
    target.below_minimum = record.below_minimum
    target.replayed = recorded.replayed


def record_usage_response(recorded: RecordedUsage) -> usage_service_pb2.RecordUsageResponse:
    response = usage_service_pb2.RecordUsageResponse()
    set_record_usage_response(response, recorded)
    return response


def _set_error(target: usage_service_pb2.RecordUsageBatchResult, error: BillingError) -> None:
    target.error.CopyFrom(status_message(error)[1])


class UsageServicer(UsageReporting, usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, pool: asyncpg.Pool, batcher: UsageBatcher) -> None:
        self._pool = pool
        self._batcher = batcher

    async def RecordUsage(
        self, request: usage_service_pb2.RecordUsageRequest, context: ServicerContext[Any, Any]
    ) -> usage_service_pb2.RecordUsageResponse:
        cmd = record_usage_command(request, datetime.now(UTC))
        recorded = await self._batcher.record(cmd, context.time_remaining())
        return record_usage_response(recorded)

    async def RecordUsageBatch(
        self, request: usage_service_pb2.RecordUsageBatchRequest, context: ServicerContext[Any, Any]
    ) -> usage_service_pb2.RecordUsageBatchResponse:
        items = request.items
        if not items or len(items) > MAX_BATCH_ITEMS:
            v = Violations()
            v.add("items", f"has {len(items)} usages; give 1 to {MAX_BATCH_ITEMS}")
            v.raise_if_any()
        now = datetime.now(UTC)
        # Each item's command, or the InvalidArgument that stands in its slot.
        parsed: list[RecordUsageCommand | InvalidArgument] = []
        for item in items:
            try:
                parsed.append(record_usage_command(item, now))
            except InvalidArgument as error:
                parsed.append(error)
        cmds = [p for p in parsed if isinstance(p, RecordUsageCommand)]
        outcomes = iter(await self._batcher.record_many(cmds, context.time_remaining()) if cmds else ())
        response = usage_service_pb2.RecordUsageBatchResponse()
        for slot in parsed:
            result = response.results.add()
            outcome = next(outcomes) if isinstance(slot, RecordUsageCommand) else slot
            if isinstance(outcome, BillingError):
                _set_error(result, outcome)
            else:
                set_record_usage_response(result.recorded, outcome)
        return response
