"""Money inside the service: integer nano-USD, one fixed scale for every amount.

1 USD = 1_000_000_000 nanos, which is also google.type.Money's `nanos` scale, so the wire conversion is
exact. A signed 64-bit column holds about ±9.2 billion USD at this scale, far beyond any wallet.
"""

from __future__ import annotations

NANOS_PER_USD = 1_000_000_000
NANOS_PER_CENT = 10_000_000
CURRENCY_CODE = "USD"


def usd(units: int, nanos: int = 0) -> int:
    """Nano-USD from whole dollars and nanos; for constants and tests (`usd(5)`, `usd(0, 675_000)`)."""
    return units * NANOS_PER_USD + nanos


def is_whole_cents(amount_nanos: int) -> bool:
    return amount_nanos % NANOS_PER_CENT == 0


def to_cents_exact(amount_nanos: int) -> int:
    """Cents for the card boundary. Card amounts are validated to whole cents, so this never rounds."""
    if not is_whole_cents(amount_nanos):
        raise ValueError(f"{amount_nanos} nanos is not a whole number of cents")
    return amount_nanos // NANOS_PER_CENT


def format_usd(amount_nanos: int) -> str:
    """A plain decimal string with all nine places, e.g. -0.000675000; no float is involved."""
    sign = "-" if amount_nanos < 0 else ""
    whole, frac = divmod(abs(amount_nanos), NANOS_PER_USD)
    return f"{sign}{whole}.{frac:09d}"
