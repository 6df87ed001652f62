"""What was used, as validated domain values (the API layer builds these from requests)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UsageType(StrEnum):
    EMAIL = "email"
    CALL = "call"
    SMS = "sms"


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class NumberType(StrEnum):
    LOCAL = "local"
    TOLL_FREE = "toll_free"


@dataclass(frozen=True)
class EmailUsage:
    count: int

    usage_type = UsageType.EMAIL


@dataclass(frozen=True)
class CallUsage:
    direction: Direction
    number_type: NumberType
    duration_seconds: int

    usage_type = UsageType.CALL


@dataclass(frozen=True)
class SmsUsage:
    """Exactly one of `segments` and `body` is set (the API layer enforces it)."""

    direction: Direction
    segments: int | None = None
    body: str | None = None

    usage_type = UsageType.SMS


Usage = EmailUsage | CallUsage | SmsUsage

# Bounds that keep one record's amount far inside a 64-bit nano column; anything past them is a bug in
# the caller, not usage.
MAX_EMAIL_COUNT = 10_000_000
MAX_CALL_SECONDS = 7 * 24 * 3600
MAX_SMS_SEGMENTS = 10_000
MAX_SMS_BODY_CHARS = 1_600
