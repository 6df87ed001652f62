"""The recharge loop counts each outcome it records in billing_recharge_attempts_total."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from service.domain.money import usd
from service.metrics import REGISTRY
from service.recharge.loop import RechargeLoop
from tests.recharge.conftest import Wallets, wait_until
from tests.support.fake_stripe import ChargeOutcome, FakeStripe


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("billing_recharge_attempts_total", {"outcome": outcome}) or 0.0


async def test_a_soft_decline_then_a_success_are_counted_by_outcome(
    wallets: Wallets, fake: FakeStripe, start_loop: Callable[..., Awaitable[RechargeLoop]]
) -> None:
    before = {outcome: _count(outcome) for outcome in ("soft_decline", "succeeded")}
    company = await wallets.create(balance_nanos=usd(5), minimum_nanos=usd(10), recharge_nanos=usd(50))
    fake.program_charge(ChargeOutcome.declined("insufficient_funds"))
    await start_loop()

    async def two_attempts_settled() -> bool:
        attempts = await wallets.attempts(company.company_id)
        return [a["status"] for a in attempts] == ["soft_declined", "succeeded"]

    await wait_until(two_attempts_settled, what="a soft decline, then a successful retry")
    assert _count("soft_decline") - before["soft_decline"] == 1
    assert _count("succeeded") - before["succeeded"] == 1
