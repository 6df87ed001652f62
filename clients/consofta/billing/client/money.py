"""google.type.Money <-> exact amounts. The service bills in nano-USD (1 USD = 10**9 nanos), never floats."""

from __future__ import annotations

from decimal import Decimal

from google.type.money_pb2 import Money

NANOS_PER_USD = 1_000_000_000
CURRENCY_CODE = "USD"


def nanos_of(value: Money) -> int:
    """The amount in nano-USD: `nanos_of(wallet.balance)`."""
    if value.currency_code.upper() not in (CURRENCY_CODE, ""):
        raise ValueError(f"expected USD, got {value.currency_code!r}")
    return int(value.units) * NANOS_PER_USD + int(value.nanos)


def usd_of(value: Money) -> Decimal:
    """The amount in dollars, exact, with nine places: `usd_of(price.amount) == Decimal("0.675")`."""
    return Decimal(nanos_of(value)).scaleb(-9)


def money(amount_nanos: int) -> Money:
    """A USD Money from nano-USD; units and nanos carry the same sign, as google.type.Money requires."""
    sign = -1 if amount_nanos < 0 else 1
    units, nanos = divmod(abs(amount_nanos), NANOS_PER_USD)
    return Money(currency_code=CURRENCY_CODE, units=sign * units, nanos=sign * nanos)
