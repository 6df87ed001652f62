"""nano-USD integers <-> google.type.Money, exactly."""

from __future__ import annotations

from google.type.money_pb2 import Money

from service.domain.money import CURRENCY_CODE, NANOS_PER_USD
from service.domain.text import excerpt


def set_money(target: Money, amount_nanos: int) -> None:
    """Exact: units and nanos carry the same sign, as google.type.Money requires.

    Written into `target` (a field of the message being built), which saves the copy that assigning a
    new Money to a field makes; the RecordUsage response has three.
    """
    sign = -1 if amount_nanos < 0 else 1
    units, nanos = divmod(abs(amount_nanos), NANOS_PER_USD)
    target.currency_code = CURRENCY_CODE
    target.units = sign * units
    target.nanos = sign * nanos


def money(amount_nanos: int) -> Money:
    built = Money()
    set_money(built, amount_nanos)
    return built


class MoneyError(ValueError):
    pass


def nanos_of(value: Money) -> int:
    """The nano-USD amount of a Money, or MoneyError saying what is wrong with it."""
    # Exactly "USD", as ISO 4217 spells it: a lowercase "usd" is refused rather than guessed at.
    if value.currency_code != CURRENCY_CODE:
        raise MoneyError(f"currency_code must be {CURRENCY_CODE!r}, got {excerpt(value.currency_code)}")
    if not -NANOS_PER_USD < value.nanos < NANOS_PER_USD:
        raise MoneyError("nanos must be between -999,999,999 and 999,999,999")
    if (value.units > 0 and value.nanos < 0) or (value.units < 0 and value.nanos > 0):
        raise MoneyError("units and nanos must have the same sign")
    return int(value.units) * NANOS_PER_USD + int(value.nanos)
