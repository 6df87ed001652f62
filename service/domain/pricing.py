"""Pricing: pure functions, no I/O.

The rounding rule, stated once: calls are billed per *started* minute, ceil(seconds / 60), so 0 s is
0 minutes and 61 s is 2. That is the only rounding in pricing. Unit prices are exact integers in
nano-USD, so `amount = billable units x unit price` is exact and never rounds.

Rate cards are stored in Postgres (versioned, effective-dated); DEFAULT_RATES_NANOS is the seed card,
which migration 0001 loads as the default card's version 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.domain.sms_segments import SmsEncoding, count_segments
from service.domain.usage import CallUsage, Direction, EmailUsage, NumberType, SmsUsage, Usage

SECONDS_PER_MINUTE = 60


class RateKey(StrEnum):
    """One price on a rate card. The values are stored in the database; never rename one."""

    EMAIL = "email"
    CALL_OUTBOUND_LOCAL = "call_outbound_local"
    CALL_OUTBOUND_TOLL_FREE = "call_outbound_toll_free"
    CALL_INBOUND_LOCAL = "call_inbound_local"
    CALL_INBOUND_TOLL_FREE = "call_inbound_toll_free"
    SMS_OUTBOUND = "sms_outbound"
    SMS_INBOUND = "sms_inbound"


# The seed's rates ("How Usage Billing Works at Consofta"), per billable unit, in nano-USD.
DEFAULT_RATES_NANOS: dict[RateKey, int] = {
    RateKey.EMAIL: 675_000,  # $0.675 per 1,000 emails
    RateKey.CALL_OUTBOUND_LOCAL: 14_000_000,  # $0.0140 per minute
    RateKey.CALL_OUTBOUND_TOLL_FREE: 14_000_000,  # $0.0140 per minute
    RateKey.CALL_INBOUND_LOCAL: 8_500_000,  # $0.0085 per minute
    RateKey.CALL_INBOUND_TOLL_FREE: 22_000_000,  # $0.0220 per minute
    RateKey.SMS_OUTBOUND: 7_900_000,  # $0.0079 per segment
    RateKey.SMS_INBOUND: 7_900_000,  # $0.0079 per segment
}


@dataclass(frozen=True)
class Metering:
    """How much of a usage is billable, before any price is known."""

    rate_key: RateKey
    billable_units: int
    sms_encoding: SmsEncoding | None = None


def billable_minutes(duration_seconds: int) -> int:
    """Per started minute: the one rounding rule of pricing."""
    if duration_seconds < 0:
        raise ValueError("duration_seconds must not be negative")
    return -(-duration_seconds // SECONDS_PER_MINUTE)


def rate_key(usage: Usage) -> RateKey:
    match usage:
        case EmailUsage():
            return RateKey.EMAIL
        case CallUsage(direction=Direction.OUTBOUND, number_type=NumberType.LOCAL):
            return RateKey.CALL_OUTBOUND_LOCAL
        case CallUsage(direction=Direction.OUTBOUND, number_type=NumberType.TOLL_FREE):
            return RateKey.CALL_OUTBOUND_TOLL_FREE
        case CallUsage(direction=Direction.INBOUND, number_type=NumberType.LOCAL):
            return RateKey.CALL_INBOUND_LOCAL
        case CallUsage(direction=Direction.INBOUND, number_type=NumberType.TOLL_FREE):
            return RateKey.CALL_INBOUND_TOLL_FREE
        case SmsUsage(direction=Direction.OUTBOUND):
            return RateKey.SMS_OUTBOUND
        case SmsUsage(direction=Direction.INBOUND):
            return RateKey.SMS_INBOUND
    raise ValueError(f"no rate for {usage!r}")


def meter(usage: Usage) -> Metering:
    """Billable units of a usage: emails, started minutes or SMS segments."""
    key = rate_key(usage)
    match usage:
        case EmailUsage(count=count):
            return Metering(key, count)
        case CallUsage(duration_seconds=seconds):
            return Metering(key, billable_minutes(seconds))
        case SmsUsage(segments=int(segments)):
            return Metering(key, segments)
        case SmsUsage(body=str(body)):
            counted = count_segments(body)
            return Metering(key, counted.segments, counted.encoding)
    raise ValueError(f"cannot meter {usage!r}")


def amount_nanos(billable_units: int, unit_price_nanos: int) -> int:
    """Exact: both factors are integers at the nano scale."""
    return billable_units * unit_price_nanos


def price_with_rates(usage: Usage, rates_nanos: dict[RateKey, int]) -> tuple[Metering, int, int]:
    """(metering, unit price, amount) of a usage on a given card; used by quotes and tests."""
    metering = meter(usage)
    unit_price = rates_nanos[metering.rate_key]
    return metering, unit_price, amount_nanos(metering.billable_units, unit_price)
