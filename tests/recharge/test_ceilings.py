"""Ceilings the company's settings cannot lift: a per-charge maximum, a per-24-hours maximum, and a
velocity limit that pauses auto-recharge. Through the real recharge loop, against the fake Stripe."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from service.config import RechargeCeilings
from service.domain.money import usd
from service.recharge.loop import RechargeLoop
from tests.support.fake_stripe import FakeStripe

from .conftest import FAST, Wallets, charges, wait_until

StartLoop = Callable[..., Awaitable[RechargeLoop]]


def _charged_cents(fake: FakeStripe, customer_id: str) -> list[int]:
    return [pi["amount"] for pi in charges(fake, customer_id) if pi["status"] == "succeeded"]


async def test_a_burst_is_cut_to_the_per_charge_maximum_and_stops_at_the_daily_maximum(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    # $10,050 short of the minimum: the settings alone would charge 201 x $50 in one go.
    company = await wallets.create(balance_nanos=usd(-10_000), minimum_nanos=usd(10), recharge_nanos=usd(50))
    ceilings = RechargeCeilings(max_charge_nanos=usd(200), max_daily_nanos=usd(500), max_charges_per_hour=10)
    await start_loop(replace(FAST, ceilings=ceilings))

    async def three_settled() -> bool:
        return len(_charged_cents(fake, company.customer_id)) == 3

    await wait_until(three_settled, what="three charges")
    await asyncio.sleep(1.0)  # three more sweeps: nothing else may be charged today
    # $200 (the per-charge maximum), $200, then the $100 left of the day's $500, in whole $50s.
    assert _charged_cents(fake, company.customer_id) == [20_000, 20_000, 10_000]
    assert len(charges(fake, company.customer_id)) == 3
    assert sum(c["amount_nanos"] for c in await wallets.credits(company.company_id)) == usd(500)
    limited = await wallets.events(company.company_id, prefix="recharge_limited")
    assert limited, "the company is told that a ceiling held the recharge back"
    first = limited[0][1]
    assert (first["limit"], first["wanted_nanos"], first["allowed_nanos"]) == (
        "max_charge",
        usd(10_050),
        usd(200),
    )
    assert await wallets.paused_reason(company.company_id) is None


async def test_more_charges_in_an_hour_than_allowed_pause_auto_recharge_with_an_event_and_a_warning(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(-10_000), minimum_nanos=usd(10), recharge_nanos=usd(50))
    ceilings = RechargeCeilings(
        max_charge_nanos=usd(50), max_daily_nanos=usd(100_000), max_charges_per_hour=3
    )
    with structlog.testing.capture_logs() as logs:
        await start_loop(replace(FAST, ceilings=ceilings))

        async def paused() -> bool:
            return await wallets.paused_reason(company.company_id) == "velocity_limit"

        await wait_until(paused, what="the velocity pause")
        await asyncio.sleep(1.0)
    assert _charged_cents(fake, company.customer_id) == [5_000] * 3
    assert len(charges(fake, company.customer_id)) == 3
    (pause,) = await wallets.events(company.company_id, prefix="recharge_paused")
    assert pause[1]["reason"] == "velocity_limit" and pause[1]["charges_last_hour"] == 3
    warnings = [
        line for line in logs if line["log_level"] == "warning" and "too many charges" in line["event"]
    ]
    assert len(warnings) == 1 and warnings[0]["company_id"] == company.company_id


async def test_a_pre_load_above_what_is_left_of_the_day_is_held_back(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=0, minimum_nanos=0, preload_nanos=usd(300))
    ceilings = RechargeCeilings(
        max_charge_nanos=usd(1_000), max_daily_nanos=usd(200), max_charges_per_hour=10
    )
    await start_loop(replace(FAST, ceilings=ceilings))

    async def told() -> bool:
        return bool(await wallets.events(company.company_id, prefix="recharge_limited"))

    await wait_until(told, what="recharge_limited")
    assert charges(fake, company.customer_id) == []
    ((_, payload),) = await wallets.events(company.company_id, prefix="recharge_limited")
    assert (payload["limit"], payload["allowed_nanos"]) == ("max_daily", 0)
