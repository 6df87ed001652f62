"""Pricing rules: pure functions, no I/O.

The rounding rule, stated once: calls are billed per *started* minute, ceil(seconds / 60), so 0 s is
0 minutes and 61 s is 2. That is the only rounding in pricing. Its inverse answers what a wallet can
afford: the whole units that the funds above the floor pay for, floor(funds / unit price), and for a
call 60 seconds for each (a call of 60 x N seconds costs N minutes, one second more costs N + 1).
`affordable_units` states it; authorize_usage() and extend_hold() (service/sql/) apply the same rule
under the wallet lock, and the tests hold the two together. Unit prices are exact integers in
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


def affordable_units(funds_nanos: int, unit_price_nanos: int, wanted_units: int) -> int:
    """The billable units, at most `wanted_units`, that `funds_nanos` (above the floor) pays for."""
    if funds_nanos <= 0:
        return 0 if unit_price_nanos > 0 else wanted_units
    if unit_price_nanos == 0:
        return wanted_units
    return min(wanted_units, funds_nanos // unit_price_nanos)


def affordable_quantity(units: int, wanted_units: int, wanted_quantity: int, quantity_per_unit: int) -> int:
    """The quantity (a call's seconds) that `units` covers, at most what was wanted."""
    if units >= wanted_units:
        return wanted_quantity
    return units * quantity_per_unit
