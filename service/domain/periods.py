"""Calendar periods in a named time zone, as UTC instants: pure, no I/O.

A local day or month starts at the first instant whose local date is that day: `datetime(y, m, d,
tzinfo=zone)` with fold=0, which for a midnight skipped by a DST jump (America/Santiago, America/Havana)
is the instant the clocks jump to, and for a repeated midnight is its first occurrence. Days are 23 or
25 hours long on DST change days; nothing here assumes 24.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum


class Grouping(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC, labelled with its local date ("2025-03-09") or month ("2025-03")."""

    label: str
    start: datetime
    end: datetime


# Files of the system's zoneinfo folder that are not zones of the tz database: "localtime" is this
# host's own zone (an answer that would differ between replicas), "posixrules" and "Factory" are not
# places.
_NOT_ZONES = frozenset(("localtime", "posixrules", "Factory"))


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def time_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone of that exact name, or None. Only names in the tz database are accepted (so not a
    path such as "../etc/passwd", nor a POSIX TZ string)."""
    if name not in _known_zones():
        return None
    return zoneinfo.ZoneInfo(name)


def local_midnight(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant of `day` in `zone`, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def current_month(now: datetime, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
    """(year, month) of the instant `now` in `zone`: what a request that names no period is about."""
    local = now.astimezone(zone)
    return local.year, local.month


def month_range(year: int, month: int, zone: zoneinfo.ZoneInfo) -> tuple[datetime, datetime]:
    """[first instant of the month, first instant of the next month) in `zone`, in UTC."""
    first = date(year, month, 1)
    return local_midnight(first, zone), local_midnight(_next_month(first), zone)


def periods(start: datetime, end: datetime, zone: zoneinfo.ZoneInfo, grouping: Grouping) -> list[Period]:
    """The local days or months that cover [start, end), each clipped to the range."""
    local = start.astimezone(zone).date()
    current = local if grouping is Grouping.DAY else local.replace(day=1)
    result: list[Period] = []
    while True:
        if grouping is Grouping.DAY:
            following = current + timedelta(days=1)
            label = current.isoformat()
        else:
            following = _next_month(current)
            label = f"{current.year:04d}-{current.month:02d}"
        period_start = max(local_midnight(current, zone), start)
        period_end = min(local_midnight(following, zone), end)
        if period_start >= end:
            break
        if period_end > period_start:
            result.append(Period(label, period_start, period_end))
        current = following
    return result
