"""GetUsageSummary: per-period, per-category sums read from the 15-minute rollup (usage_rollups).

A rollup bucket that lies wholly inside one period is summed as is. A bucket that a boundary cuts (the
range start or end at an odd minute, or a local midnight off the quarter-hour grid, which no zone in use
today has) is left out of the rollup read, and the records of its two sides are read individually from
usage_records instead. So the result is exact for every zone and range, and a month over a million
records reads about 21 thousand rollup rows and at most two buckets' worth of records.

Voids are shown separately, never netted: each category's sums keep the amounts as recorded, and
`voided_nanos` says how much of those records has been voided so far (read from usage_voids joined to
the voided records, by the records' occurrence; voids are few, so this is a small read).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from service.app.reporting.companies import require_wallet
from service.domain.periods import Period
from service.domain.usage_kinds import RateKey

BUCKET = timedelta(minutes=15)
_BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # usage_rollup_bucket() bins from the same origin


@dataclass
class Sums:
    record_count: int = 0
    quantity: int = 0
    billable_units: int = 0
    amount_nanos: int = 0
    # Voided so far of the records summed (summaries only; statements list voids as entries).
    voided_nanos: int = 0

    def add(self, other: Sums) -> None:
        self.record_count += other.record_count
        self.quantity += other.quantity
        self.billable_units += other.billable_units
        self.amount_nanos += other.amount_nanos
        self.voided_nanos += other.voided_nanos


@dataclass
class PeriodSums:
    period: Period
    by_rate_key: dict[RateKey, Sums] = field(default_factory=dict)

    @property
    def amount_nanos(self) -> int:
        return sum(s.amount_nanos for s in self.by_rate_key.values())


@dataclass
class UsageSummary:
    periods: list[PeriodSums]
    totals: dict[RateKey, Sums]

    @property
    def amount_nanos(self) -> int:
        return sum(s.amount_nanos for s in self.totals.values())

    @property
    def voided_nanos(self) -> int:
        return sum(s.voided_nanos for s in self.totals.values())


def bucket_floor(moment: datetime) -> datetime:
    return moment - (moment - _BUCKET_ORIGIN) % BUCKET


_SUMMARY_SQL = """
    select g, rate_key, sum(n)::bigint as record_count, sum(q)::bigint as quantity,
           sum(b)::bigint as billable_units, sum(a)::bigint as amount_nanos
      from (select width_bucket(bucket_start, $2::timestamptz[]) as g, rate_key,
                   record_count as n, quantity as q, billable_units as b, amount_nanos as a
              from usage_rollups
             where company_id = $1 and bucket_start >= $3 and bucket_start < $4
               and bucket_start <> all($5::timestamptz[])
            union all
            select width_bucket(r.occurred_at, $2::timestamptz[]), r.rate_key,
                   1, r.quantity, r.billable_units, r.amount_nanos
              from unnest($6::timestamptz[], $7::timestamptz[]) as sliver (lo, hi)
              join usage_records r
                on r.company_id = $1 and r.occurred_at >= sliver.lo and r.occurred_at < sliver.hi) parts
     group by g, rate_key
"""


_VOIDED_SQL = """
    select width_bucket(r.occurred_at, $2::timestamptz[]) as g, r.rate_key,
           sum(v.amount_nanos)::bigint as voided_nanos
      from usage_voids v
      join usage_records r on r.company_id = v.company_id and r.usage_record_id = v.usage_record_id
     where v.company_id = $1 and r.occurred_at >= $3 and r.occurred_at < $4
     group by 1, 2
"""


async def usage_summary(pool: asyncpg.Pool, company_id: str, periods: list[Period]) -> UsageSummary:
    """Sums of the company's records over `periods` (contiguous, in order, non-empty)."""
    await require_wallet(pool, company_id)
    start, end = periods[0].start, periods[-1].end
    boundaries = [p.start for p in periods] + [end]
    cut = sorted({bucket_floor(b) for b in boundaries if bucket_floor(b) != b})
    slivers = [(max(s, start), min(s + BUCKET, end)) for s in cut]
    slivers = [(lo, hi) for lo, hi in slivers if lo < hi]
    rows = await pool.fetch(
        _SUMMARY_SQL,
        company_id,
        boundaries,
        bucket_floor(start),
        end,
        cut,
        [lo for lo, _ in slivers],
        [hi for _, hi in slivers],
    )
    result = [PeriodSums(p) for p in periods]
    totals: dict[RateKey, Sums] = defaultdict(Sums)
    for row in rows:
        index = row["g"] - 1
        # Rows outside the periods cannot come back (the range filters see to it); fail loudly if they do.
        assert 0 <= index < len(periods), f"summary row outside the range: {dict(row)}"
        key = row["rate_key"]
        sums = Sums(row["record_count"], row["quantity"], row["billable_units"], row["amount_nanos"])
        result[index].by_rate_key.setdefault(key, Sums()).add(sums)
        totals[key].add(sums)
    for row in await pool.fetch(_VOIDED_SQL, company_id, boundaries, start, end):
        voided = Sums(voided_nanos=row["voided_nanos"])
        result[row["g"] - 1].by_rate_key.setdefault(row["rate_key"], Sums()).add(voided)
        totals[row["rate_key"]].add(voided)
    return UsageSummary(result, dict(totals))
