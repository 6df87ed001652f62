"""Text messages, billed per segment: given by the caller, or counted from the body as carriers count."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from service.domain.errors import FieldViolation
from service.domain.sms_segments import count_segments
from service.domain.usage_kinds.base import Direction, Metering, RateKey, UsageKind, bounded

MAX_SMS_SEGMENTS = 10_000
MAX_SMS_BODY_CHARS = 1_600


@dataclass(frozen=True)
class SmsUsage:
    """Exactly one of `segments` and `body` is set (`violations` says so otherwise)."""

    direction: Direction
    segments: int | None = None
    body: str | None = None


class Sms(UsageKind[SmsUsage]):
    name = "sms"
    usage_class = SmsUsage
    unit = "segment"
    plural = "text messages"
    dimensions = ("direction",)
    quantity_field = "segments"
    default_rates_nanos: ClassVar[Mapping[RateKey, int]] = {
        "sms_outbound": 7_900_000,
        "sms_inbound": 7_900_000,
    }  # $0.0079 per segment

    def meter(self, usage: SmsUsage) -> Metering:
        key = self.rate_key(usage)
        if usage.segments is not None:
            return Metering(key, billable_units=usage.segments, quantity=usage.segments)
        assert usage.body is not None, "violations() requires segments or body"
        counted = count_segments(usage.body)
        return Metering(key, counted.segments, quantity=counted.segments, sms_encoding=counted.encoding)

    def violations(self, usage: SmsUsage, field: str) -> list[FieldViolation]:
        if usage.segments is not None and usage.body is not None:
            return [FieldViolation(field, "set either segments or body, not both")]
        if usage.segments is None and usage.body is None:
            return [FieldViolation(field, "must set segments or body")]
        if usage.segments is not None:
            return bounded(f"{field}.segments", usage.segments, 1, MAX_SMS_SEGMENTS, "segments")
        assert usage.body is not None
        if len(usage.body) > MAX_SMS_BODY_CHARS:
            return [
                FieldViolation(
                    f"{field}.body",
                    f"is {len(usage.body):,} characters long; the limit is {MAX_SMS_BODY_CHARS:,}",
                )
            ]
        return []

    def fingerprint(self, usage: SmsUsage) -> tuple[object, ...]:
        # The body's digest, not the body: a fingerprint is stored, a message body never is.
        digest = None
        if usage.body is not None:
            digest = hashlib.sha256(usage.body.encode("utf-8", "surrogatepass")).hexdigest()
        return (usage.direction, usage.segments, digest)


KIND = Sms()
