"""The backup card: a recharge the primary hard-declines, or that needs authentication, is tried once on
the backup, as a new attempt with its own key; real Postgres, the real stripe library, the fake Stripe.

Which card declines is the fake's honest rule: each Stripe test token charges as Stripe's own does
(pm_card_chargeDeclinedLostCard hard-declines, pm_card_authenticationRequired needs 3-D Secure...).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from service.domain.money import usd
from service.recharge.fallback import fallback_attempt_id
from service.recharge.loop import RechargeLoop
from tests.support.fake_stripe import FakeStripe

from .conftest import Wallets, charge_posts, charges, wait_until

StartLoop = Callable[..., Awaitable[RechargeLoop]]
NOW = dt.datetime.now(dt.UTC)

HARD = "pm_card_chargeDeclinedLostCard"  # visa 9987, lost_card
AUTH = "pm_card_authenticationRequired"  # visa 3184
SOFT = "pm_card_chargeDeclinedInsufficientFunds"  # visa 9995
STOLEN = "pm_card_chargeDeclinedStolenCard"  # visa 9979


async def _credits(wallets: Wallets, company_id: str) -> int:
    return len(await wallets.credits(company_id))


async def _settled(wallets: Wallets, company_id: str) -> bool:
    found = await wallets.attempts(company_id)
    return bool(found) and all(a["status"] not in ("pending", "processing") for a in found)


@pytest.mark.parametrize(
    ("primary_card", "primary_status"), [(HARD, "hard_declined"), (AUTH, "requires_action")]
)
async def test_a_hard_decline_or_authentication_falls_back_once_and_credits_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, primary_card: str, primary_status: str
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card=primary_card)
    backup_pm = await wallets.set_backup(company, "pm_card_mastercard")
    await start_loop()

    async def credited() -> bool:
        return await _credits(wallets, company.company_id) == 1

    await wait_until(credited, what="the credit from the backup card")
    await asyncio.sleep(0.5)  # nothing more follows
    primary, fallback = await wallets.attempts(company.company_id)
    assert primary["card_role"] == "primary" and primary["status"] == primary_status
    assert primary["payment_method_id"] == company.payment_method_id
    assert fallback["card_role"] == "backup" and fallback["status"] == "succeeded"
    assert fallback["fallback_of"] == primary["attempt_id"] and fallback["payment_method_id"] == backup_pm
    assert fallback["attempt_id"] == fallback_attempt_id(primary["attempt_id"])
    assert fallback["amount_nanos"] == primary["amount_nanos"] == usd(50)

    # Two PaymentIntents, one on each card, each under its own attempt's key; one paid. The one that
    # waited for 3-D Secure was canceled before the backup was charged, so it can never be paid too.
    pis = charges(fake, company.customer_id)
    assert sorted((pi["payment_method"], pi["status"]) for pi in pis) == sorted(
        [
            (
                company.payment_method_id,
                "canceled" if primary_card == AUTH else "requires_payment_method",
            ),
            (backup_pm, "succeeded"),
        ]
    )
    assert {p.idempotency_key for p in charge_posts(fake)} == {
        f"recharge-{primary['attempt_id']}",
        f"recharge-{fallback['attempt_id']}",
    }
    (credit,) = await wallets.credits(company.company_id)
    assert credit["recharge_attempt_id"] == fallback["attempt_id"]
    assert credit["reference"] == next(pi["id"] for pi in pis if pi["status"] == "succeeded")
    assert await wallets.balance(company.company_id) == usd(5) + usd(50)
    assert await wallets.paused_reason(company.company_id) is None

    events = await wallets.events(company.company_id, prefix="recharge_")
    assert [e for e, _ in events] == [
        "recharge_started",
        "recharge_falling_back",
        "recharge_started",
        "recharge_succeeded",
    ]
    falling_back, started, succeeded = events[1][1], events[2][1], events[3][1]
    assert falling_back["card_role"] == "primary" and falling_back["card_last4"] in ("9987", "3184")
    assert falling_back["fallback_attempt_id"] == str(fallback["attempt_id"])
    assert started["card_role"] == "backup" and started["fallback_of"] == str(primary["attempt_id"])
    assert succeeded["card_role"] == "backup" and succeeded["card_last4"] == "4444"
    assert succeeded["card_brand"] == "mastercard" and succeeded["payment_method_id"] == backup_pm
    # The primary's decline did not count as a failed recharge (no suspension input).
    assert not await wallets.pool.fetchval(
        "select last_recharge_failed from wallets where company_id = $1", company.company_id
    )


@pytest.mark.parametrize(("backup_card", "reason"), [(STOLEN, "hard_decline"), (SOFT, "hard_decline")])
async def test_a_decline_on_the_backup_too_pauses_and_charges_no_more(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, backup_card: str, reason: str
) -> None:
    """A hard decline on the backup pauses as today; a soft one too, with the primary's reason: the
    primary's decline was final, and retrying would only go back to it."""
    company = await wallets.create(balance_nanos=usd(5), card=HARD)
    await wallets.set_backup(company, backup_card)
    await start_loop()

    async def paused() -> bool:
        return await wallets.paused_reason(company.company_id) is not None

    await wait_until(paused, what="the pause")
    await asyncio.sleep(1.0)  # FAST retries soft declines after 0.3 s: none may follow
    assert await wallets.paused_reason(company.company_id) == reason
    primary, fallback = await wallets.attempts(company.company_id)
    assert primary["status"] == "hard_declined"
    assert fallback["card_role"] == "backup"
    assert fallback["status"] == ("hard_declined" if backup_card == STOLEN else "soft_declined")
    assert len(charges(fake, company.customer_id)) == 2 and await wallets.credits(company.company_id) == []
    events = await wallets.events(company.company_id, prefix="recharge_")
    assert [e for e, _ in events] == [
        "recharge_started",
        "recharge_falling_back",
        "recharge_started",
        "recharge_failed",
        "recharge_paused",
    ]
    failed = events[3][1]
    assert failed["card_role"] == "backup" and failed["fallback_of"] == str(primary["attempt_id"])
    assert failed["next_retry_at"] is None


async def test_a_soft_decline_does_not_fall_back(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card=SOFT)
    backup_pm = await wallets.set_backup(company, "pm_card_visa")
    await start_loop()

    async def retried() -> bool:
        return len(await wallets.attempts(company.company_id)) >= 2

    await wait_until(retried, what="the soft-decline retry")
    found = await wallets.attempts(company.company_id)
    assert all(a["card_role"] == "primary" and a["fallback_of"] is None for a in found)
    assert all(pi["payment_method"] != backup_pm for pi in charges(fake, company.customer_id))
    assert await wallets.credits(company.company_id) == []


async def test_no_backup_card_pauses_as_before(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card=HARD)
    await start_loop()

    async def paused() -> bool:
        return await wallets.paused_reason(company.company_id) == "hard_decline"

    await wait_until(paused, what="the pause")
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["card_role"] == "primary" and attempt["status"] == "hard_declined"
    events = [e for e, _ in await wallets.events(company.company_id, prefix="recharge_")]
    assert events == ["recharge_started", "recharge_failed", "recharge_paused"]


async def test_the_fallback_id_is_derived_from_the_primary_and_the_database_allows_one(
    wallets: Wallets, pool: asyncpg.Pool
) -> None:
    primary_id = uuid.uuid4()
    assert (
        fallback_attempt_id(primary_id)
        == fallback_attempt_id(primary_id)
        != fallback_attempt_id(uuid.uuid4())
    )
    company = await wallets.create(balance_nanos=usd(5))
    insert = """
        insert into recharge_attempts (attempt_id, company_id, kind, amount_nanos, provider_customer_id,
                                       payment_method_id, card_brand, card_last4, status, settled_at,
                                       card_role, fallback_of)
        values ($1, $2, 'auto', $3, 'cus', 'pm', 'visa', '4242', $4, $5, $6, $7)
    """
    await pool.execute(insert, primary_id, company.company_id, usd(50), "hard_declined", NOW, "primary", None)
    await pool.execute(
        insert, fallback_attempt_id(primary_id), company.company_id, usd(50), "hard_declined", NOW, "backup",
        primary_id,
    )  # fmt: skip
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            insert, uuid.uuid4(), company.company_id, usd(50), "hard_declined", NOW, "backup", primary_id
        )
    with pytest.raises(asyncpg.CheckViolationError):  # a backup attempt always names its primary
        await pool.execute(
            insert, uuid.uuid4(), company.company_id, usd(50), "hard_declined", NOW, "backup", None
        )


async def test_two_loops_make_one_fallback_and_one_credit(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    companies = [await wallets.create(balance_nanos=usd(5), card=HARD) for _ in range(4)]
    for company in companies:
        await wallets.set_backup(company, "pm_card_visa")
    await asyncio.gather(start_loop(), start_loop())

    async def all_credited() -> bool:
        counts = [await _credits(wallets, c.company_id) for c in companies]
        return all(n >= 1 for n in counts)

    await wait_until(all_credited, timeout_s=20, what="every company's credit")
    await asyncio.sleep(0.8)
    for company in companies:
        found = await wallets.attempts(company.company_id)
        assert [a["card_role"] for a in found] == ["primary", "backup"]
        assert await _credits(wallets, company.company_id) == 1
        paid = [pi for pi in charges(fake, company.customer_id) if pi["status"] == "succeeded"]
        assert len(paid) == 1 and len(charges(fake, company.customer_id)) == 2
        assert await wallets.balance(company.company_id) == usd(55)


async def test_the_backup_waits_while_the_primarys_cancel_gets_no_answer(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    # Stripe fails the cancel twice (500): whether the primary can still be paid is not known, so the
    # backup is not charged; the fallback is retried with the same cancel key, then charged once.
    fake.fail_requests(500, path="/v1/payment_intents/*/cancel", times=2, should_retry=False)
    company = await wallets.create(balance_nanos=usd(5), card=AUTH)
    backup_pm = await wallets.set_backup(company, "pm_card_visa")
    await start_loop()

    async def credited() -> bool:
        return await _credits(wallets, company.company_id) == 1

    await wait_until(credited, what="the credit from the backup card")
    cancels = [p for p in fake.posts() if p.path.endswith("/cancel")]
    assert [p.status for p in cancels] == [500, 500, 200]
    assert len({p.idempotency_key for p in cancels}) == 1
    backup_charges = [p for p in charge_posts(fake) if p.params.get("payment_method") == backup_pm]
    assert len(backup_charges) == 1  # sent only after the cancel was answered
    assert fake.posts().index(backup_charges[0]) > fake.posts().index(cancels[-1])
    events = [e for e, _ in await wallets.events(company.company_id, prefix="recharge_")]
    assert events.count("recharge_retrying") == 2 and events[-1] == "recharge_succeeded"
    assert await wallets.balance(company.company_id) == usd(5) + usd(50)
