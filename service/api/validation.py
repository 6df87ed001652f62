"""Request validation: every problem becomes a field violation naming the field, all reported at once."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from consofta.billing.v1 import usage_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.convert import datetime_of
from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.usage import (
    MAX_CALL_SECONDS,
    MAX_EMAIL_COUNT,
    MAX_SMS_BODY_CHARS,
    MAX_SMS_SEGMENTS,
    CallUsage,
    Direction,
    EmailUsage,
    NumberType,
    SmsUsage,
    Usage,
)

COMPANY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Printable ASCII: space (0x20) to tilde (0x7e).
IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
MAX_DISPLAY_NAME_CHARS = 200
MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_USAGE_AGE = timedelta(days=366)

_CALL_DIRECTIONS = {
    usage_pb2.CALL_DIRECTION_OUTBOUND: Direction.OUTBOUND,
    usage_pb2.CALL_DIRECTION_INBOUND: Direction.INBOUND,
}
_NUMBER_TYPES = {
    usage_pb2.NUMBER_TYPE_LOCAL: NumberType.LOCAL,
    usage_pb2.NUMBER_TYPE_TOLL_FREE: NumberType.TOLL_FREE,
}
_SMS_DIRECTIONS = {
    usage_pb2.SMS_DIRECTION_OUTBOUND: Direction.OUTBOUND,
    usage_pb2.SMS_DIRECTION_INBOUND: Direction.INBOUND,
}


class Violations:
    """Collects field violations; `raise_if_any()` turns them into one InvalidArgument."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def check_company_id(v: Violations, value: str, field: str = "company_id") -> None:
    if not value:
        v.add(field, "is required")
    elif not COMPANY_ID.match(value):
        v.add(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")


def check_request_key(v: Violations, value: str, field: str) -> None:
    if not value:
        v.add(field, "is required: choose a key that is unique for this request and reuse it on retries")
    elif len(value) > 255:
        v.add(field, f"is {len(value)} characters long; the limit is 255")
    elif not IDEMPOTENCY_KEY.match(value):
        v.add(field, "must be printable ASCII characters only")


def check_display_name(v: Violations, value: str, field: str = "display_name") -> None:
    if not value.strip():
        v.add(field, "is required")
    elif len(value) > MAX_DISPLAY_NAME_CHARS:
        v.add(field, f"is {len(value)} characters long; the limit is {MAX_DISPLAY_NAME_CHARS}")
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        v.add(field, "must not contain control characters")


def _bounded(v: Violations, field: str, value: int, low: int, high: int, what: str) -> None:
    if value < low:
        v.add(field, f"must be at least {low} {what}, got {value}")
    elif value > high:
        v.add(field, f"must be at most {high:,} {what} in one record, got {value:,}")


def parse_usage(v: Violations, usage: usage_pb2.Usage, field: str = "usage") -> Usage | None:
    """The domain usage described by `usage`, or None after adding violations."""
    kinds = [name for name in ("email", "call", "sms") if usage.HasField(name)]
    if not kinds:
        v.add(field, "must set exactly one of email, call or sms")
        return None
    if len(kinds) > 1:
        v.add(field, f"must set exactly one of email, call or sms, not {' and '.join(kinds)}")
        return None
    before = len(v.items)
    kind = kinds[0]
    if kind == "email":
        _bounded(v, f"{field}.email.count", usage.email.count, 1, MAX_EMAIL_COUNT, "emails")
        return EmailUsage(usage.email.count) if len(v.items) == before else None
    if kind == "call":
        call = usage.call
        direction = _CALL_DIRECTIONS.get(call.direction)
        number_type = _NUMBER_TYPES.get(call.number_type)
        if direction is None:
            v.add(f"{field}.call.direction", "must be CALL_DIRECTION_OUTBOUND or CALL_DIRECTION_INBOUND")
        if number_type is None:
            v.add(f"{field}.call.number_type", "must be NUMBER_TYPE_LOCAL or NUMBER_TYPE_TOLL_FREE")
        _bounded(v, f"{field}.call.duration_seconds", call.duration_seconds, 0, MAX_CALL_SECONDS, "seconds")
        if len(v.items) != before or direction is None or number_type is None:
            return None
        return CallUsage(direction, number_type, call.duration_seconds)
    sms = usage.sms
    direction = _SMS_DIRECTIONS.get(sms.direction)
    if direction is None:
        v.add(f"{field}.sms.direction", "must be SMS_DIRECTION_OUTBOUND or SMS_DIRECTION_INBOUND")
    has_segments, has_body = sms.HasField("segments"), sms.HasField("body")
    if has_segments and has_body:
        v.add(f"{field}.sms", "set either segments or body, not both")
    elif not has_segments and not has_body:
        v.add(f"{field}.sms", "must set segments or body")
    elif has_segments:
        _bounded(v, f"{field}.sms.segments", sms.segments, 1, MAX_SMS_SEGMENTS, "segments")
    elif len(sms.body) > MAX_SMS_BODY_CHARS:
        v.add(
            f"{field}.sms.body", f"is {len(sms.body):,} characters long; the limit is {MAX_SMS_BODY_CHARS:,}"
        )
    if len(v.items) != before or direction is None:
        return None
    if has_segments:
        return SmsUsage(direction, segments=sms.segments)
    return SmsUsage(direction, body=sms.body)


def parse_occurred_at(
    v: Violations, has_value: bool, stamp: Timestamp, now: datetime, field: str = "occurred_at"
) -> datetime | None:
    if not has_value:
        return None
    try:
        moment = datetime_of(stamp)
    except (ValueError, OverflowError):
        v.add(field, "is not a valid timestamp")
        return None
    if moment > now + MAX_FUTURE_SKEW:
        v.add(
            field,
            f"is in the future ({moment.isoformat()}); at most {MAX_FUTURE_SKEW} of clock skew is allowed",
        )
    elif moment < now - MAX_USAGE_AGE:
        v.add(field, f"is more than {MAX_USAGE_AGE.days} days in the past ({moment.isoformat()})")
    return moment
