"""Requests built from plain Python values; shared by the async and the sync client.

Enums are given by their short lower-case name ("inbound", "toll_free") or as the generated enum value
(`usage_pb2.CALL_DIRECTION_INBOUND`). Times are timezone-aware datetimes or Timestamps. Bad values raise
ValueError here, before anything is sent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, TypeAlias, TypeVar

from consofta.billing.v1 import usage_pb2, usage_service_pb2, wallet_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp

CallDirection: TypeAlias = Literal["outbound", "inbound"] | usage_pb2.CallDirection.ValueType
NumberType: TypeAlias = Literal["local", "toll_free"] | usage_pb2.NumberType.ValueType
SmsDirection: TypeAlias = Literal["outbound", "inbound"] | usage_pb2.SmsDirection.ValueType
When: TypeAlias = datetime | Timestamp

_CALL_DIRECTIONS = {
    "outbound": usage_pb2.CALL_DIRECTION_OUTBOUND,
    "inbound": usage_pb2.CALL_DIRECTION_INBOUND,
}
_NUMBER_TYPES = {"local": usage_pb2.NUMBER_TYPE_LOCAL, "toll_free": usage_pb2.NUMBER_TYPE_TOLL_FREE}
_SMS_DIRECTIONS = {
    "outbound": usage_pb2.SMS_DIRECTION_OUTBOUND,
    "inbound": usage_pb2.SMS_DIRECTION_INBOUND,
}


_V = TypeVar("_V", bound=int)


def new_key() -> str:
    """A fresh idempotency key. The client makes one per call, before the first attempt."""
    return str(uuid.uuid4())


def _enum(name: str, value: str | _V, names: dict[str, _V]) -> _V:
    if isinstance(value, str):
        try:
            return names[value]
        except KeyError:
            raise ValueError(f"{name} must be one of {sorted(names)}, got {value!r}") from None
    return value


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
    return usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count))


def call_usage(direction: CallDirection, number_type: NumberType, seconds: int) -> usage_pb2.Usage:
    return usage_pb2.Usage(
        call=usage_pb2.CallUsage(
            direction=_enum("direction", direction, _CALL_DIRECTIONS),
            number_type=_enum("number_type", number_type, _NUMBER_TYPES),
            duration_seconds=seconds,
        )
    )


def sms_usage(direction: SmsDirection, body: str | None, segments: int | None) -> usage_pb2.Usage:
    if (body is None) == (segments is None):
        raise ValueError("give exactly one of body and segments")
    return usage_pb2.Usage(
        sms=usage_pb2.SmsUsage(
            direction=_enum("direction", direction, _SMS_DIRECTIONS), body=body, segments=segments
        )
    )


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
