"""Request validation: every problem becomes a field violation naming the field, all reported at once."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from service.api.wire.timestamps import datetime_of
from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.ids import COMPANY_ID
from service.domain.periods import time_zone
from service.domain.text import excerpt, has_unprintable

# Printable ASCII: space (0x20) to tilde (0x7e).
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
MAX_DISPLAY_NAME_CHARS = 200
MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_USAGE_AGE = timedelta(days=366)


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
    elif not COMPANY_ID.fullmatch(value):
        v.add(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")


def check_request_key(v: Violations, value: str, field: str) -> None:
    if not value:
        v.add(field, "is required: choose a key that is unique for this request and reuse it on retries")
    elif len(value) > 255:
        v.add(field, f"is {len(value)} characters long; the limit is 255")
    elif not IDEMPOTENCY_KEY.fullmatch(value):
        v.add(field, "must be printable ASCII characters only")
    elif value != value.strip(" "):
        # " k " and "k" would be two keys that read the same: refused rather than trimmed.
        v.add(field, "must not start or end with a space")


def check_display_name(v: Violations, value: str, field: str = "display_name") -> None:
    if not value.strip():
        v.add(field, "is required")
    elif len(value) > MAX_DISPLAY_NAME_CHARS:
        v.add(field, f"is {len(value)} characters long; the limit is {MAX_DISPLAY_NAME_CHARS}")
    elif has_unprintable(value):
        v.add(field, "must not contain control, format or line-separator characters")


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


# Far enough from year 1 and year 9999 that shifting into any time zone stays a valid datetime.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def parse_moment(
    v: Violations, has_value: bool, stamp: Timestamp, field: str, *, required: bool
) -> datetime | None:
    if not has_value:
        if required:
            v.add(field, "is required")
        return None
    try:
        moment = datetime_of(stamp)
    except (ValueError, OverflowError):
        v.add(field, "is not a valid timestamp")
        return None
    if not EARLIEST <= moment <= LATEST:
        v.add(field, f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        return None
    return moment


def check_ordered(
    v: Violations, start: datetime | None, end: datetime | None, start_field: str, end_field: str
) -> None:
    if start is not None and end is not None and end <= start:
        v.add(end_field, f"must be after {start_field}")


def parse_time_zone(v: Violations, name: str, field: str = "time_zone") -> zoneinfo.ZoneInfo | None:
    if not name:
        v.add(field, 'is required: an IANA time zone name such as "America/New_York" or "UTC"')
        return None
    zone = time_zone(name)
    if zone is None:
        v.add(field, f'{excerpt(name)} is not an IANA time zone name (e.g. "America/New_York", "UTC")')
    return zone
