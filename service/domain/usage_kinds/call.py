"""Phone calls, billed per started minute of their duration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from service.domain.errors import FieldViolation
from service.domain.pricing import SECONDS_PER_MINUTE, billable_minutes
from service.domain.usage_kinds.base import Direction, Metering, NumberType, RateKey, UsageKind, bounded

MAX_CALL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class CallUsage:
    direction: Direction
    number_type: NumberType
    duration_seconds: int


class Call(UsageKind[CallUsage]):
    name = "call"
    usage_class = CallUsage
    unit = "minute"
    plural = "calls"
    dimensions = ("direction", "number_type")
    quantity_field = "duration_seconds"
    quantity_per_unit = SECONDS_PER_MINUTE
    # Per minute: outbound $0.0140 to either kind of number; inbound $0.0085 local, $0.0220 toll-free.
    default_rates_nanos: ClassVar[Mapping[RateKey, int]] = {
        "call_outbound_local": 14_000_000,
        "call_outbound_toll_free": 14_000_000,
        "call_inbound_local": 8_500_000,
        "call_inbound_toll_free": 22_000_000,
    }

    def meter(self, usage: CallUsage) -> Metering:
        return Metering(
            self.rate_key(usage),
            billable_units=billable_minutes(usage.duration_seconds),
            quantity=usage.duration_seconds,
        )

    def violations(self, usage: CallUsage, field: str) -> list[FieldViolation]:
        return bounded(f"{field}.duration_seconds", usage.duration_seconds, 0, MAX_CALL_SECONDS, "seconds")

    def fingerprint(self, usage: CallUsage) -> tuple[object, ...]:
        return (usage.direction, usage.number_type, usage.duration_seconds)


KIND = Call()
