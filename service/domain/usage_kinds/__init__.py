"""The usage kinds, registered in one tuple. To add a kind, see ARCHITECTURE.md ("How to add a usage type").

Everything kind-specific outside a kind's own module is derived from `KINDS`: validation and wire
conversion (service/api/wire/usage.py), reporting categories, the stored form, the request fingerprint.
"""

from __future__ import annotations

from typing import Any

from service.domain.pricing import amount_nanos
from service.domain.usage_kinds import call, email, sms
from service.domain.usage_kinds.base import (
    Category,
    Direction,
    Metering,
    NumberType,
    RateKey,
    UsageKind,
)
from service.domain.usage_kinds.call import CallUsage
from service.domain.usage_kinds.email import EmailUsage
from service.domain.usage_kinds.sms import SmsUsage

Usage = EmailUsage | CallUsage | SmsUsage

KINDS: tuple[UsageKind[Any], ...] = (email.KIND, call.KIND, sms.KIND)

_BY_NAME = {kind.name: kind for kind in KINDS}
_BY_CLASS: dict[type, UsageKind[Any]] = {kind.usage_class: kind for kind in KINDS}
CATEGORY_OF_RATE_KEY: dict[RateKey, Category] = {
    key: category for kind in KINDS for key, category in kind.categories().items()
}
# Every rate key, in the order rate cards list them.
RATE_KEYS: tuple[RateKey, ...] = tuple(CATEGORY_OF_RATE_KEY)
DEFAULT_RATES_NANOS: dict[RateKey, int] = {
    key: price for kind in KINDS for key, price in kind.default_rates_nanos.items()
}
assert set(DEFAULT_RATES_NANOS) == set(RATE_KEYS), "every rate key needs a seed price"

__all__ = [
    "CATEGORY_OF_RATE_KEY",
    "DEFAULT_RATES_NANOS",
    "KINDS",
    "RATE_KEYS",
    "CallUsage",
    "Category",
    "Direction",
    "EmailUsage",
    "Metering",
    "NumberType",
    "RateKey",
    "SmsUsage",
    "Usage",
    "UsageKind",
    "fingerprint",
    "kind_named",
    "kind_of",
    "meter",
    "price_with_rates",
    "rate_keys_matching",
    "usage_from_stored",
]


def kind_named(name: str) -> UsageKind[Any] | None:
    return _BY_NAME.get(name)


def kind_of(usage: Usage) -> UsageKind[Any]:
    return _BY_CLASS[type(usage)]


def meter(usage: Usage) -> Metering:
    """Billable units of a usage: emails, started minutes or SMS segments."""
    return kind_of(usage).meter(usage)


def fingerprint(usage: Usage) -> tuple[object, ...]:
    kind = kind_of(usage)
    return (kind.name, *kind.fingerprint(usage))


def usage_from_stored(usage_type: str, rate_key: RateKey, quantity: int) -> Usage:
    """The usage a stored record describes; LookupError for a kind or rate key this code does not know."""
    kind = _BY_NAME.get(usage_type)
    if kind is None or rate_key not in CATEGORY_OF_RATE_KEY:
        raise LookupError(f"stored usage of unknown kind {usage_type!r} / rate key {rate_key!r}")
    usage: Usage = kind.from_stored(rate_key, quantity)
    return usage


def rate_keys_matching(filters: list[Category]) -> list[RateKey]:
    """The rate keys any of the filters covers, in rate-card order; every key when there is no filter."""
    if not filters:
        return list(RATE_KEYS)
    return [
        key for key, category in CATEGORY_OF_RATE_KEY.items() if any(f.matches(category) for f in filters)
    ]


def price_with_rates(usage: Usage, rates_nanos: dict[RateKey, int]) -> tuple[Metering, int, int]:
    """(metering, unit price, amount) of a usage on a given card; used by quotes and tests."""
    metering = meter(usage)
    unit_price = rates_nanos[metering.rate_key]
    return metering, unit_price, amount_nanos(metering.billable_units, unit_price)
