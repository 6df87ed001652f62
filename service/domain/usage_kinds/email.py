"""Emails, billed per email."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from service.domain.errors import FieldViolation
from service.domain.usage_kinds.base import Metering, RateKey, UsageKind, bounded

# Far inside a 64-bit nano amount at any sane price; more in one record is a caller's bug.
MAX_EMAIL_COUNT = 10_000_000


@dataclass(frozen=True)
class EmailUsage:
    count: int


class Email(UsageKind[EmailUsage]):
    name = "email"
    usage_class = EmailUsage
    unit = "email"
    plural = "emails"
    quantity_field = "count"
    default_rates_nanos: ClassVar[Mapping[RateKey, int]] = {"email": 675_000}  # $0.675 per 1,000 emails

    def meter(self, usage: EmailUsage) -> Metering:
        return Metering(self.rate_key(usage), billable_units=usage.count, quantity=usage.count)

    def violations(self, usage: EmailUsage, field: str) -> list[FieldViolation]:
        return bounded(f"{field}.count", usage.count, 1, MAX_EMAIL_COUNT, "emails")

    def fingerprint(self, usage: EmailUsage) -> tuple[object, ...]:
        return (usage.count,)


KIND = Email()
