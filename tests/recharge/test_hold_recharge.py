"""A hold that takes the available balance below the minimum starts the recharge, as a debit does, and
the charge covers what is held (real loop, real stripe library against the fake Stripe)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import asyncpg

from service.app.holds import authorize_usage
from service.domain.money import usd
from service.domain.usage_kinds.base import Direction, NumberType
from service.domain.usage_kinds.call import CallUsage
from service.recharge import engine, planning
from service.recharge.loop import RechargeLoop
from tests.support.fake_stripe import FakeStripe

from .conftest import Wallets, charges, wait_until

StartLoop = Callable[..., Awaitable[RechargeLoop]]


def outbound_minutes(minutes: int) -> CallUsage:
    return CallUsage(Direction.OUTBOUND, NumberType.LOCAL, minutes * 60)


async def test_a_long_calls_hold_below_the_minimum_starts_the_recharge(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, pool: asyncpg.Pool
) -> None:
    company = await wallets.create(balance_nanos=usd(20), minimum_nanos=usd(10), recharge_nanos=usd(50))
    await start_loop()
    # 500 minutes at $0.014 hold $7: available $13, above the minimum; nothing happens.
    first = await authorize_usage(pool, company.company_id, outbound_minutes(500), "call-a")
    assert first.allowed
    assert await planning.sweep_candidates(pool) == []
    # 600 more minutes hold $8.40: available $4.60, below; the balance itself is untouched ($20).
    second = await authorize_usage(pool, company.company_id, outbound_minutes(600), "call-b")
    assert second.allowed and second.available_nanos == usd(4, 600_000_000)
    await wait_until(lambda: _charged(fake, company.customer_id), what="a charge after the hold")
    (charge,) = charges(fake, company.customer_id)
    assert charge["amount"] == 5000  # one $50 recharge lifts the available -$1 above $10
    balance = await pool.fetchval(
        "select balance_nanos from wallets where company_id = $1", company.company_id
    )
    assert balance in (usd(20), usd(70))


async def _charged(fake: FakeStripe, customer_id: str) -> bool:
    return bool(charges(fake, customer_id))


def test_the_engine_plans_from_the_available_balance() -> None:
    snapshot = engine.WalletSnapshot(
        balance_nanos=usd(20),
        minimum_balance_nanos=usd(10),
        auto_recharge_enabled=True,
        recharge_amount_nanos=usd(50),
        preload_amount_nanos=0,
        monthly_cap_nanos=None,
        paused_reason=None,
        payment_method_id="pm_1",
        first_card_set=True,
        in_flight_nanos=None,
        preload_succeeded=False,
        charged_this_month_nanos=0,
        cap_block_notified=False,
        last_auto=None,
        last_preload=None,
        held_nanos=usd(111),
    )
    decision = engine.decide(snapshot, dt.datetime.now(dt.UTC))
    assert decision.charge is not None
    assert (decision.charge.multiple, decision.charge.amount_nanos) == (3, usd(150))  # -91 + 150 >= 10
