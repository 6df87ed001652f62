"""The bad-input catalogue (tests/support/bad_inputs.py) against every field of every RPC the server
serves: each answer is a code a caller can act on, never UNKNOWN or INTERNAL, with a BadRequest naming
the field when the value is wrong whatever else the request says (then INVALID_ARGUMENT only: not a
NOT_FOUND for an id no valid request could carry, nor a RESOURCE_EXHAUSTED from an echo too large for
the status), and the ledger stays whole."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from service.api.wire.money import money
from service.server import SERVICE_NAMES
from tests.conftest import Stubs
from tests.support import bad_inputs
from tests.support.ledger import assert_ledger_invariants
from tests.support.rpc import rich_error

ACCEPTABLE = frozenset(
    (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    )
)
# A status (message plus details) past this is an echo of the caller's value: it must be a prefix.
MAX_STATUS_BYTES = 4_096
METHODS = bad_inputs.methods(SERVICE_NAMES)


def _good(message: Message, descriptor: Descriptor, company: str) -> None:
    """Fill `message` with values that pass validation, so each case's bad field is what is tested."""
    now = datetime.now(UTC)
    for field in descriptor.fields:
        name = field.name
        kind = field.message_type.full_name if field.message_type is not None else None
        if field.is_repeated:
            continue
        if name == "company_id":
            setattr(message, name, company)
        elif name in ("request_id", "idempotency_key"):
            setattr(message, name, f"catalogue-{uuid.uuid4().hex}")
        elif name in ("display_name", "reason"):
            setattr(message, name, "catalogue")
        elif name == "time_zone":
            message.time_zone = "UTC"  # type: ignore[attr-defined]
        elif name == "payment_method_id":
            message.payment_method_id = "pm_card_visa"  # type: ignore[attr-defined]
        elif name == "year":
            message.year = now.year  # type: ignore[attr-defined]
        elif name == "month":
            message.month = now.month  # type: ignore[attr-defined]
        elif kind == "google.type.Money":
            getattr(message, name).CopyFrom(money(10_000_000_000))
        elif kind == "consofta.billing.v1.Usage":
            getattr(message, name).email.count = 1
        elif kind == "google.protobuf.Timestamp" and name in ("start_time", "end_time"):
            getattr(message, name).FromDatetime(now - timedelta(days=1) if name == "start_time" else now)
        elif kind == "google.protobuf.FieldMask":
            getattr(message, name).paths.append("*")
        elif kind == "consofta.billing.v1.BillingSettings":
            # Every writable setting, valid, so that the mask "*" reads each one the cases spoil.
            settings = message.settings  # type: ignore[attr-defined]
            settings.minimum_balance.CopyFrom(money(10_000_000_000))
            settings.recharge_amount.CopyFrom(money(50_000_000_000))
            settings.preload_amount.CopyFrom(money(50_000_000_000))
            settings.monthly_recharge_cap.CopyFrom(money(500_000_000_000))


def _names_field(violations: dict[str, str], field: str) -> bool:
    """The BadRequest names the field, or the message or element holding it (`amount` for
    `amount.currency_code`), or a part of it (`usage.email` for `usage`)."""
    return any(
        v == field or field.startswith((v + ".", v + "[")) or v.startswith((field + ".", field + "["))
        for v in violations
    )


async def _call(
    channel: grpc.aio.Channel, case: bad_inputs.Case
) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError | None]:
    try:
        if case.server_streaming:
            # No serializers: the case's bytes go on the wire as they are.
            stream: Any = channel.unary_stream(case.method)
            async for _ in stream(case.raw, timeout=1.0):
                pass
        else:
            unary: Any = channel.unary_unary(case.method)
            await unary(case.raw, timeout=10.0)
    except grpc.aio.AioRpcError as error:
        if case.server_streaming and error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, None  # an accepted watch stays open
        return error.code(), error
    return grpc.StatusCode.OK, None


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
async def test_every_bad_input_is_a_caller_error_naming_the_field(stubs: Stubs, db_url: str, method) -> None:
    company = await stubs.new_company()
    base = bad_inputs.message_class(method.input_type)()
    _good(base, method.input_type, company)
    problems: list[str] = []
    tried = 0
    started = time.monotonic()
    every = list(bad_inputs.cases(method, base))
    for field in method.input_type.fields:
        if field.is_repeated and field.message_type is not None:
            # A batch's items: each case puts one bad element in an otherwise valid request.
            element = bad_inputs.message_class(field.message_type)()
            _good(element, field.message_type, company)
            every += bad_inputs.element_cases(method, field, element)
    for case in every:
        tried += 1
        code, error = await _call(stubs.channel, case)
        where = f"{case.field or '(message)'} = {case.label}"
        # A nested field may be one the request ignores (a settings field outside the update mask, an
        # output-only field): there OK is an answer too. A top-level one is always read.
        strict = case.field_fault and "." not in case.field
        if code not in ACCEPTABLE or (strict and code is not grpc.StatusCode.INVALID_ARGUMENT):
            problems.append(f"{where}: {code.name} {error.details() if error else ''}"[:300])
            continue
        if error is None:
            continue
        details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
        if len(details) + len(error.details() or "") > MAX_STATUS_BYTES:
            problems.append(f"{where}: a status of {len(details):,} bytes echoes the value")
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            fields = rich_error(error).fields
            if not fields:
                problems.append(f"{where}: INVALID_ARGUMENT without a BadRequest")
            elif case.field_fault and not _names_field(fields, case.field):
                problems.append(f"{where}: the BadRequest names {sorted(fields)}, not {case.field}")
    # A request of flags only (ListWebhookEndpoints) has just its malformed-message cases.
    only_flags = all(f.type == f.TYPE_BOOL for f in method.input_type.fields)
    assert tried >= (2 if only_flags else 10), f"only {tried} cases for {method.full_name}"
    assert not problems, (
        f"{len(problems)} of {tried} cases ({time.monotonic() - started:.1f}s):\n" + "\n".join(problems)
    )
    conn = await asyncpg.connect(db_url)
    try:
        await assert_ledger_invariants(conn)
    finally:
        await conn.close()
