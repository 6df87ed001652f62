"""The seed's rates and the per-started-minute rounding, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.money import format_usd, usd
from service.domain.pricing import amount_nanos, billable_minutes
from service.domain.sms_segments import SmsEncoding
from service.domain.usage_kinds import (
    DEFAULT_RATES_NANOS,
    RATE_KEYS,
    CallUsage,
    Direction,
    EmailUsage,
    NumberType,
    SmsUsage,
    meter,
    price_with_rates,
)


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (3600, 60), (3601, 61)]
)
def test_calls_bill_per_started_minute(seconds: int, minutes: int) -> None:
    assert billable_minutes(seconds) == minutes


@given(st.integers(min_value=0, max_value=10**9))
def test_started_minutes_cover_the_call_and_waste_less_than_a_minute(seconds: int) -> None:
    minutes = billable_minutes(seconds)
    assert minutes * 60 >= seconds > (minutes - 1) * 60 or (seconds == 0 and minutes == 0)


def test_one_email_costs_0_000675_usd() -> None:
    _, unit, amount = price_with_rates(EmailUsage(1), DEFAULT_RATES_NANOS)
    assert unit == amount == usd(0, 675_000)
    assert format_usd(amount) == "0.000675000"


def test_a_thousand_emails_cost_0_675_usd() -> None:
    _, _, amount = price_with_rates(EmailUsage(1000), DEFAULT_RATES_NANOS)
    assert amount == usd(0, 675_000_000)


@pytest.mark.parametrize(
    ("direction", "number_type", "per_minute"),
    [
        (Direction.OUTBOUND, NumberType.LOCAL, usd(0, 14_000_000)),
        (Direction.OUTBOUND, NumberType.TOLL_FREE, usd(0, 14_000_000)),
        (Direction.INBOUND, NumberType.LOCAL, usd(0, 8_500_000)),
        (Direction.INBOUND, NumberType.TOLL_FREE, usd(0, 22_000_000)),
    ],
)
@pytest.mark.parametrize(("seconds", "minutes"), [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (3600, 60)])
def test_call_rates(
    direction: Direction, number_type: NumberType, per_minute: int, seconds: int, minutes: int
) -> None:
    metering, unit, amount = price_with_rates(CallUsage(direction, number_type, seconds), DEFAULT_RATES_NANOS)
    assert metering.billable_units == minutes
    assert unit == per_minute
    assert amount == minutes * per_minute


def test_call_of_61_seconds_inbound_toll_free_costs_0_044_usd() -> None:
    _, _, amount = price_with_rates(
        CallUsage(Direction.INBOUND, NumberType.TOLL_FREE, 61), DEFAULT_RATES_NANOS
    )
    assert format_usd(amount) == "0.044000000"


@pytest.mark.parametrize("direction", [Direction.OUTBOUND, Direction.INBOUND])
def test_sms_segment_costs_0_0079_usd_both_ways(direction: Direction) -> None:
    _, unit, amount = price_with_rates(SmsUsage(direction, segments=3), DEFAULT_RATES_NANOS)
    assert unit == usd(0, 7_900_000)
    assert amount == usd(0, 23_700_000)


def test_sms_body_is_metered_by_counted_segments() -> None:
    metering = meter(SmsUsage(Direction.OUTBOUND, body="a" * 161))
    assert (metering.rate_key, metering.billable_units, metering.sms_encoding) == (
        "sms_outbound",
        2,
        SmsEncoding.GSM7,
    )


def test_every_rate_key_has_a_default_rate() -> None:
    assert set(DEFAULT_RATES_NANOS) == set(RATE_KEYS)


@given(st.integers(min_value=0, max_value=10_000_000), st.integers(min_value=0, max_value=10**12))
def test_amount_is_exact_integer_product(units: int, unit_price: int) -> None:
    assert amount_nanos(units, unit_price) == units * unit_price
