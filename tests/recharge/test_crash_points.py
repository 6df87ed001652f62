"""Real process death at each step of a charge, then a restart: exactly one charge and one credit.

The worker runs as a subprocess (`consofta-billing worker`) against the test database and the fake
Stripe served from this test process. It dies by ``os._exit`` at a crash point (service/recharge/crash.py,
test-only) or by SIGKILL, so no ``finally`` or shutdown code runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.domain.money import usd
from service.recharge.crash import CRASH_ENV, CRASH_EXIT_CODE
from tests.support.fake_stripe import FakeStripe

from .conftest import Company, Wallets, charge_posts, charges, wait_until
from .workers import Worker


@pytest.fixture
async def workers(db_url: str, fake: FakeStripe, tmp_path: Path) -> AsyncIterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**env: str) -> Worker:
        worker = Worker(db_url, fake, tmp_path / f"worker-{len(started)}.log", **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.running:
            worker.kill()


async def _one_charge_one_credit(wallets: Wallets, fake: FakeStripe, company_id: str, customer: str) -> None:
    async def credited() -> bool:
        return len(await wallets.credits(company_id)) >= 1

    await wait_until(credited, timeout_s=20, what="the credit after restart")
    (pi,) = charges(fake, customer)
    assert pi["status"] == "succeeded"
    (credit,) = await wallets.credits(company_id)
    (attempt,) = await wallets.attempts(company_id)
    assert credit["reference"] == pi["id"] and credit["recharge_attempt_id"] == attempt["attempt_id"]
    assert attempt["status"] == "succeeded"
    assert {p.idempotency_key for p in charge_posts(fake)} == {f"recharge-{attempt['attempt_id']}"}
    assert await wallets.balance(company_id) == usd(5) + usd(50)


@pytest.mark.parametrize("point", ["after_attempt_commit", "after_response_before_write"])
async def test_crash_at_a_point_then_restart_charges_once_and_credits_once(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker], pool: asyncpg.Pool, point: str
) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    crashing = workers(**{CRASH_ENV: point})
    assert await crashing.wait_exit() == CRASH_EXIT_CODE, crashing.log()

    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == "pending"  # committed, never settled
    assert await wallets.credits(company.company_id) == []
    if point == "after_attempt_commit":
        assert charges(fake) == []
    else:
        assert len(charges(fake)) == 1 and charges(fake)[0]["status"] == "succeeded"

    restarted = workers()
    await _one_charge_one_credit(wallets, fake, company.company_id, company.customer_id)
    if point == "after_response_before_write":
        # The retry was answered from Stripe's idempotency cache: the same PaymentIntent.
        assert [p.replayed for p in charge_posts(fake)] == [False, True]
    assert await restarted.stop() == 0


async def test_kill_after_the_request_is_sent_then_restart_charges_once_and_credits_once(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker]
) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    # Stripe takes the charge at once but holds its answer; the worker is killed while it waits.
    fake.delay_responses(30.0, method="POST", path="/v1/payment_intents")
    first = workers()

    async def request_sent() -> bool:
        return bool(charge_posts(fake))

    await wait_until(request_sent, timeout_s=20, what="the charge request")
    first.kill()
    assert charge_posts(fake)[0].status is None  # it never got an answer
    assert len(charges(fake)) == 1 and await wallets.credits(company.company_id) == []

    restarted = workers()
    await _one_charge_one_credit(wallets, fake, company.company_id, company.customer_id)
    assert await restarted.stop() == 0


# ---- the fallback onto the backup card -------------------------------------------------------------


@pytest.mark.parametrize("point", ["after_fallback_commit", "fallback_after_response_before_write"])
async def test_crash_in_the_fallback_then_restart_charges_the_backup_once_and_credits_once(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker], point: str
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card="pm_card_chargeDeclinedLostCard")
    backup_pm = await wallets.set_backup(company, "pm_card_visa")
    crashing = workers(**{CRASH_ENV: point})
    assert await crashing.wait_exit() == CRASH_EXIT_CODE, crashing.log()

    primary, fallback = await wallets.attempts(company.company_id)
    assert primary["status"] == "hard_declined" and fallback["status"] == "pending"  # committed, unsettled
    assert fallback["fallback_of"] == primary["attempt_id"] and fallback["payment_method_id"] == backup_pm
    assert await wallets.credits(company.company_id) == []
    on_backup = [pi for pi in charges(fake) if pi["payment_method"] == backup_pm]
    if point == "after_fallback_commit":
        assert on_backup == []
    else:
        assert len(on_backup) == 1 and on_backup[0]["status"] == "succeeded"

    restarted = workers()

    async def credited() -> bool:
        return len(await wallets.credits(company.company_id)) >= 1

    await wait_until(credited, timeout_s=20, what="the credit after restart")
    primary, fallback = await wallets.attempts(company.company_id)  # still exactly two attempts
    assert fallback["status"] == "succeeded"
    paid = [pi for pi in charges(fake, company.customer_id) if pi["status"] == "succeeded"]
    (credit,) = await wallets.credits(company.company_id)
    assert len(paid) == 1 and paid[0]["payment_method"] == backup_pm
    assert credit["reference"] == paid[0]["id"] and credit["recharge_attempt_id"] == fallback["attempt_id"]
    backup_posts = [
        p for p in charge_posts(fake) if p.idempotency_key == f"recharge-{fallback['attempt_id']}"
    ]
    if point == "fallback_after_response_before_write":
        # The retry was answered from Stripe's idempotency cache: the same PaymentIntent.
        assert [p.replayed for p in backup_posts] == [False, True]
    else:
        assert [p.replayed for p in backup_posts] == [False]
    assert len(charges(fake, company.customer_id)) == 2  # the declined primary and the paid backup
    assert await wallets.balance(company.company_id) == usd(5) + usd(50)
    assert await restarted.stop() == 0


async def _died_after_a_3ds_fallback_commit(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker]
) -> tuple[Company, str, dict[str, Any]]:
    """A company whose primary needs 3-D Secure and whose worker died once the fallback was committed,
    before the backup's charge: (the company, the backup's payment method, the waiting PaymentIntent)."""
    company = await wallets.create(balance_nanos=usd(5), card="pm_card_authenticationRequired")
    backup_pm = await wallets.set_backup(company, "pm_card_visa")
    crashing = workers(**{CRASH_ENV: "after_fallback_commit"})
    assert await crashing.wait_exit() == CRASH_EXIT_CODE, crashing.log()
    (waiting,) = charges(fake, company.customer_id)
    assert waiting["status"] == "requires_action"
    return company, backup_pm, waiting


async def test_a_primary_waiting_for_3ds_is_canceled_before_the_backup_is_charged(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker]
) -> None:
    # A PaymentIntent left in requires_action can still be completed by its cardholder: charging the
    # backup beside it could take the recharge twice. Between the fallback's commit and the backup's
    # charge (the process dies there), nothing changes; on restart the primary is canceled first.
    company, backup_pm, waiting = await _died_after_a_3ds_fallback_commit(wallets, fake, workers)

    restarted = workers()

    async def credited() -> bool:
        return len(await wallets.credits(company.company_id)) >= 1

    await wait_until(credited, timeout_s=20, what="the credit from the backup card")
    primary, fallback = await wallets.attempts(company.company_id)
    assert (primary["status"], fallback["status"]) == ("requires_action", "succeeded")
    assert fake.payment_intents[waiting["id"]]["status"] == "canceled"  # it can never be paid now
    cancels = [p for p in fake.posts() if p.path == f"/v1/payment_intents/{waiting['id']}/cancel"]
    assert [p.idempotency_key for p in cancels] == [f"recharge-{primary['attempt_id']}:cancel-for-fallback"]
    with pytest.raises(ValueError, match="canceled, not requires_action"):
        fake.complete_authentication(waiting["id"])  # too late for the cardholder
    (credit,) = await wallets.credits(company.company_id)
    paid = [pi for pi in charges(fake, company.customer_id) if pi["status"] == "succeeded"]
    assert [pi["payment_method"] for pi in paid] == [backup_pm] and credit["reference"] == paid[0]["id"]
    assert await wallets.balance(company.company_id) == usd(5) + usd(50)
    assert await restarted.stop() == 0


async def test_a_primary_authenticated_late_is_credited_and_the_backup_is_not_charged(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker], pool: asyncpg.Pool
) -> None:
    # The cardholder completes 3-D Secure on the primary after its fallback was committed and before
    # the backup's charge: the primary's money is the recharge, and the backup is never charged.
    company, backup_pm, waiting = await _died_after_a_3ds_fallback_commit(wallets, fake, workers)
    fake.complete_authentication(waiting["id"])  # no webhook reaches us: the cancel's answer says it

    restarted = workers()

    async def settled() -> bool:
        return all(
            a["status"] not in ("pending", "processing") for a in await wallets.attempts(company.company_id)
        )

    await wait_until(settled, timeout_s=20, what="the fallback to be settled")
    primary, fallback = await wallets.attempts(company.company_id)
    assert (primary["status"], fallback["status"]) == ("succeeded", "expired")
    (credit,) = await wallets.credits(company.company_id)
    assert (credit["reference"], credit["recharge_attempt_id"]) == (waiting["id"], primary["attempt_id"])
    assert [pi for pi in charges(fake, company.customer_id) if pi["payment_method"] == backup_pm] == []
    assert await wallets.balance(company.company_id) == usd(5) + usd(50)
    events = [
        r["event_type"]
        for r in await pool.fetch(
            "select event_type from wallet_events where company_id = $1 order by sequence", company.company_id
        )
    ]
    assert "recharge_fallback_not_needed" in events and "recharge_paused" not in events
    paused = await pool.fetchval(
        "select auto_recharge_paused_reason from billing_settings where company_id = $1", company.company_id
    )
    assert paused is None
    assert await restarted.stop() == 0


async def test_kill_while_the_backup_charge_is_answered_then_restart_charges_once_and_credits_once(
    wallets: Wallets, fake: FakeStripe, workers: Callable[..., Worker]
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card="pm_card_chargeDeclinedLostCard")
    backup_pm = await wallets.set_backup(company, "pm_card_visa")
    # The primary's decline is answered at once; the backup's charge is taken but its answer held.
    fake.delay_responses(0.0, method="POST", path="/v1/payment_intents", times=1)
    fake.delay_responses(30.0, method="POST", path="/v1/payment_intents", times=1)
    first = workers()

    async def backup_sent() -> bool:
        return len(charge_posts(fake)) >= 2

    await wait_until(backup_sent, timeout_s=20, what="the backup's charge request")
    first.kill()
    assert charge_posts(fake)[1].status is None  # it never got an answer
    assert [pi["payment_method"] for pi in charges(fake) if pi["status"] == "succeeded"] == [backup_pm]
    assert await wallets.credits(company.company_id) == []

    restarted = workers()

    async def credited() -> bool:
        return len(await wallets.credits(company.company_id)) >= 1

    await wait_until(credited, timeout_s=20, what="the credit after restart")
    _, fallback = await wallets.attempts(company.company_id)
    (credit,) = await wallets.credits(company.company_id)
    paid = [pi for pi in charges(fake, company.customer_id) if pi["status"] == "succeeded"]
    assert len(paid) == 1 and credit["reference"] == paid[0]["id"]
    assert credit["recharge_attempt_id"] == fallback["attempt_id"]
    assert await wallets.balance(company.company_id) == usd(5) + usd(50)
    assert await restarted.stop() == 0
