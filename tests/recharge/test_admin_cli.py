"""`consofta-billing recharges list` as support runs it: a real subprocess over real recharge attempts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from service.domain.money import usd
from service.recharge.loop import RechargeLoop
from tests.recharge.conftest import Wallets, wait_until
from tests.support.cli import run
from tests.support.fake_stripe import ChargeOutcome, FakeStripe


async def test_recharges_list_shows_each_attempt_with_its_outcome(
    db_url: str, wallets: Wallets, fake: FakeStripe, start_loop: Callable[..., Awaitable[RechargeLoop]]
) -> None:
    company = await wallets.create(balance_nanos=usd(5), minimum_nanos=usd(10), recharge_nanos=usd(50))
    fake.program_charge(ChargeOutcome.declined("insufficient_funds"))  # the first attempt is declined
    await start_loop()

    async def two_attempts_settled() -> bool:
        attempts = await wallets.attempts(company.company_id)
        return [a["status"] for a in attempts] == ["soft_declined", "succeeded"]

    await wait_until(two_attempts_settled, what="a soft decline, then a successful retry")

    result = await run("recharges", "list", company.company_id, database_url=db_url)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"company   {company.company_id}: 2 recharge attempt(s), newest first"
    assert lines[1].split()[:5] == ["at", "(UTC)", "attempt", "kind", "status"]  # the table's header
    newest, oldest = lines[2], lines[3]
    (pi,) = [p for p in fake.payment_intents_for(company.customer_id) if p["status"] == "succeeded"]
    assert "succeeded" in newest and "50.000000000" in newest and pi["id"] in newest
    assert "soft_declined" in oldest and "insufficient_funds" in oldest


async def test_recharges_list_of_an_unknown_company_is_exit_1(db_url: str) -> None:
    result = await run("recharges", "list", "nobody", database_url=db_url)
    assert (result.code, result.out) == (1, "")
    assert result.err == "consofta-billing: company 'nobody' has no wallet\n"
