"""Pricing rules: pure functions, no I/O.

The rounding rule, stated once: calls are billed per *started* minute, ceil(seconds / 60), so 0 s is
0 minutes and 61 s is 2. That is the only rounding in pricing. Unit prices are exact integers in
nano-USD, so `amount = billable units x unit price` is exact and never rounds.

Rate cards are stored in Postgres (versioned, effective-dated); each usage kind's module holds the seed's
prices, which the baseline migration loads as the default card's version 1.
"""

from __future__ import annotations

SECONDS_PER_MINUTE = 60


def billable_minutes(duration_seconds: int) -> int:
    """Per started minute: the one rounding rule of pricing."""
    if duration_seconds < 0:
        raise ValueError("duration_seconds must not be negative")
    return -(-duration_seconds // SECONDS_PER_MINUTE)


def amount_nanos(billable_units: int, unit_price_nanos: int) -> int:
    """Exact: both factors are integers at the nano scale."""
    return billable_units * unit_price_nanos
