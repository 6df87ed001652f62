"""Requests built from plain Python values; shared by the async and the sync client.

Usages are built from the contract itself: `usage("call", direction="inbound", ...)` sets the `call`
field of `Usage` from the fields of its message, so a usage type added to the proto needs no change here.
Enums are given by their short lower-case name ("inbound", "toll_free"), which is the value's name
without the enum's prefix (buf's convention: `CallDirection` has `CALL_DIRECTION_INBOUND`), or as the
generated enum value (`usage_pb2.CALL_DIRECTION_INBOUND`). Times are timezone-aware datetimes or
Timestamps. Bad values raise ValueError here, naming the field, before anything is sent.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal, TypeAlias

from consofta.billing.v1 import usage_pb2, usage_service_pb2, wallet_service_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

CallDirection: TypeAlias = Literal["outbound", "inbound"] | usage_pb2.CallDirection.ValueType
NumberType: TypeAlias = Literal["local", "toll_free"] | usage_pb2.NumberType.ValueType
SmsDirection: TypeAlias = Literal["outbound", "inbound"] | usage_pb2.SmsDirection.ValueType
When: TypeAlias = datetime | Timestamp


def new_key() -> str:
    """A fresh idempotency key. The client makes one per call, before the first attempt."""
    return str(uuid.uuid4())


def usage_kinds() -> list[str]:
    """The usage kinds the contract knows: the message fields of `Usage` ("email", "call", "sms", ...)."""
    return [f.name for f in usage_pb2.Usage.DESCRIPTOR.fields if f.message_type is not None]


def enum_names(enum: EnumDescriptor) -> dict[str, int]:
    """Short lower-case name -> number of every value but the zero `..._UNSPECIFIED` one, which no request
    may carry: `CallDirection` -> {"outbound": CALL_DIRECTION_OUTBOUND, "inbound": CALL_DIRECTION_INBOUND}."""
    prefix = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", enum.name).upper() + "_"
    return {
        value.name.removeprefix(prefix).lower(): value.number for value in enum.values if value.number != 0
    }


def _enum_value(path: str, enum: EnumDescriptor, value: object) -> object:
    if not isinstance(value, str):
        return value  # a generated enum value (an int) is taken as given
    names = enum_names(enum)
    try:
        return names[value]
    except KeyError:
        raise ValueError(f"{path} must be one of {sorted(names)}, got {value!r}") from None


def usage(kind: str, **fields: object) -> usage_pb2.Usage:
    """A `Usage` with its `kind` field set to that field's message built from `fields`; a field given
    as None stays unset. `usage("call", direction="inbound", number_type="local", duration_seconds=61)`.

    Unknown kinds, unknown fields and unknown enum names raise ValueError naming them.
    """
    field = usage_pb2.Usage.DESCRIPTOR.fields_by_name.get(kind)
    if field is None or field.message_type is None:
        raise ValueError(f"usage kind must be one of {sorted(usage_kinds())}, got {kind!r}")
    message = field.message_type
    values: dict[str, object] = {}
    for name, value in fields.items():
        inner = message.fields_by_name.get(name)
        if inner is None:
            known = sorted(message.fields_by_name)
            raise ValueError(f"{kind} usage has no field {name!r}; its fields are {known}")
        if value is None:
            continue
        enum = inner.enum_type
        values[name] = value if enum is None else _enum_value(f"{kind}.{name}", enum, value)
    built = usage_pb2.Usage()
    part = getattr(built, kind)
    part.SetInParent()  # set even when no field is: an empty kind is the server's to reject, with a reason
    part.MergeFrom(message_factory.GetMessageClass(message)(**values))
    return built


def _timestamp(when: When) -> Timestamp:
    if isinstance(when, Timestamp):
        return when
    if when.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware (e.g. datetime.now(UTC))")
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def record_usage_request(
    company: str,
    usage: usage_pb2.Usage,
    idempotency_key: str | None,
    occurred_at: When | None,
    hold_id: str | None = None,
) -> usage_service_pb2.RecordUsageRequest:
    request = usage_service_pb2.RecordUsageRequest(
        company_id=company, idempotency_key=idempotency_key or new_key(), usage=usage, hold_id=hold_id or ""
    )
    if occurred_at is not None:
        request.occurred_at.CopyFrom(_timestamp(occurred_at))
    return request


def email_usage(count: int) -> usage_pb2.Usage:
    return usage("email", count=count)


def call_usage(direction: CallDirection, number_type: NumberType, seconds: int) -> usage_pb2.Usage:
    return usage("call", direction=direction, number_type=number_type, duration_seconds=seconds)


def sms_usage(direction: SmsDirection, body: str | None, segments: int | None) -> usage_pb2.Usage:
    if (body is None) == (segments is None):
        raise ValueError("give exactly one of body and segments")
    return usage("sms", direction=direction, body=body, segments=segments)


def create_wallet_request(
    company: str, display_name: str, idempotency_key: str | None
) -> wallet_service_pb2.CreateWalletRequest:
    return wallet_service_pb2.CreateWalletRequest(
        company_id=company, display_name=display_name, request_id=idempotency_key or new_key()
    )


def authorize_usage_request(
    company: str, usage: usage_pb2.Usage, idempotency_key: str | None, hold_seconds: int | None
) -> wallet_service_pb2.AuthorizeUsageRequest:
    request = wallet_service_pb2.AuthorizeUsageRequest(
        company_id=company, usage=usage, request_id=idempotency_key or new_key()
    )
    if hold_seconds is not None:
        request.hold_duration.seconds = hold_seconds
    return request


def with_key(request: usage_service_pb2.RecordUsageRequest) -> usage_service_pb2.RecordUsageRequest:
    """The request itself when it has a key, else a copy with a fresh one (the caller's stays untouched)."""
    if request.idempotency_key:
        return request
    keyed = usage_service_pb2.RecordUsageRequest()
    keyed.CopyFrom(request)
    keyed.idempotency_key = new_key()
    return keyed
