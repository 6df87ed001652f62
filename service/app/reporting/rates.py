"""GetRateCard and EstimateCost: the prices that apply to a company, and a quote that records nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.app.reporting.companies import require_wallet
from service.domain.errors import NoRateCard
from service.domain.pricing import amount_nanos
from service.domain.usage_kinds import RATE_KEYS, Metering, RateKey, Usage, meter

# The same choice effective_rate() makes (migration 0001), for every key at once and with the card's id:
# the company's newest card in effect wins for the keys it lists, the default card's newest otherwise.
# tests/reporting/test_rates_and_quotes.py checks the two agree key by key.
_RATE_CARD_SQL = """
    with cards as (
        (select rate_card_id, company_id, version, effective_from from rate_cards
          where company_id = $1 and effective_from <= $2 order by effective_from desc limit 1)
        union all
        (select rate_card_id, company_id, version, effective_from from rate_cards
          where company_id is null and effective_from <= $2 order by effective_from desc limit 1))
    select distinct on (r.rate_key) r.rate_key, r.unit_price_nanos, c.company_id as card_company_id,
           c.version, c.effective_from
      from cards c join rate_card_rates r using (rate_card_id)
     order by r.rate_key, c.company_id nulls last
"""


@dataclass(frozen=True)
class AppliedRate:
    rate_key: RateKey
    unit_price_nanos: int
    rate_card: str  # "default" or the company id, as Price.rate_card
    rate_card_version: int
    effective_from: datetime
    company_override: bool


async def rate_card(pool: asyncpg.Pool, company_id: str, at: datetime) -> list[AppliedRate]:
    await require_wallet(pool, company_id)
    rows = await pool.fetch(_RATE_CARD_SQL, company_id, at)
    order = list(RATE_KEYS)
    rates = [
        AppliedRate(
            row["rate_key"],
            row["unit_price_nanos"],
            row["card_company_id"] or "default",
            row["version"],
            row["effective_from"],
            row["card_company_id"] is not None,
        )
        for row in rows
    ]
    return sorted(rates, key=lambda r: order.index(r.rate_key))


@dataclass(frozen=True)
class Estimate:
    metering: Metering
    unit_price_nanos: int
    amount_nanos: int
    rate_card: str
    rate_card_version: int
    repeat_count: int

    @property
    def total_billable_units(self) -> int:
        return self.metering.billable_units * self.repeat_count

    @property
    def total_amount_nanos(self) -> int:
        return self.amount_nanos * self.repeat_count


async def estimate_cost(
    pool: asyncpg.Pool, company_id: str, usage: Usage, repeat_count: int, at: datetime
) -> Estimate:
    """Priced exactly as RecordUsage would price it at `at` (same metering, same effective_rate())."""
    metering = meter(usage)
    await require_wallet(pool, company_id)
    rate = await pool.fetchrow(
        "select unit_price_nanos, rate_card, rate_card_version"
        " from effective_rate(p_company_id => $1, p_rate_key => $2, p_at => $3)",
        company_id,
        metering.rate_key,
        at,
    )
    if rate is None or rate["unit_price_nanos"] is None:
        raise NoRateCard(
            f"no rate card has a {metering.rate_key} rate in effect at {at.isoformat()}",
            metadata={"rate_key": metering.rate_key},
        )
    unit_price = int(rate["unit_price_nanos"])
    return Estimate(
        metering,
        unit_price,
        amount_nanos(metering.billable_units, unit_price),
        rate["rate_card"],
        rate["rate_card_version"],
        repeat_count,
    )
