"""Auto-recharge end to end on a real Postgres and the real stripe library against the fake Stripe."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, usage_service_pb2, usage_service_pb2_grpc

from service.config import load_config
from service.domain.money import usd
from service.recharge import attempts, outcomes, planning
from service.recharge.engine import Kind
from service.recharge.loop import LoopSettings, RechargeLoop
from service.server import BillingServer, start_server
from tests.support.config import server_config
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, ChargeOutcome, FakeStripe

from .conftest import CALL_MINUTE_NANOS, FAST, Wallets, charge_posts, charges, wait_until

StartLoop = Callable[..., Awaitable[RechargeLoop]]


# ---- happy path, through the real server ------------------------------------------------------------


@pytest.fixture
async def billing(db_url: str, fake: FakeStripe) -> AsyncIterator[BillingServer]:
    """The whole service on port 0, with Stripe pointed at the fake. The sweep is slow on purpose: only
    the NOTIFY from the crossing debit can wake the loop in time."""
    config = server_config(
        payment_provider="stripe",
        stripe_secret_key=fake.api_key,
        stripe_webhook_secret=DEFAULT_WEBHOOK_SECRET,
        stripe_api_base=fake.url,
        recharge_sweep_interval_s=300.0,
        recharge_lease_s=3.0,
    )
    running = await start_server(config, database_url=db_url)
    yield running
    await running.stop(grace_s=1)


async def test_crossing_debit_charges_once_credits_once_and_reports_in_order(
    billing: BillingServer, wallets: Wallets, fake: FakeStripe
) -> None:
    company = await wallets.create(balance_nanos=usd(20), minimum_nanos=usd(10), recharge_nanos=usd(50))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{billing.port}") as channel:
        stub = usage_service_pb2_grpc.UsageServiceStub(channel)
        # 500 minutes = $7: still above the minimum, no recharge.
        await stub.RecordUsage(call(company.company_id, "u1", 500 * 60))
        await asyncio.sleep(0.3)
        assert charges(fake) == []
        # Another $7 crosses below $10; its RecordUsage reply means the debit has committed.
        reply = await stub.RecordUsage(call(company.company_id, "u2", 500 * 60))
        committed_at = time.monotonic()
    assert reply.below_minimum

    # The issue asks for this bound explicitly: the first charge reaches the provider within 1 s.
    while not charge_posts(fake):
        assert time.monotonic() - committed_at < 1.0, "no charge attempt within 1 s of the crossing debit"
        await asyncio.sleep(0.005)
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")

    (pi,) = charges(fake)
    assert pi["amount"] == 5000 and pi["currency"] == "usd" and pi["customer"] == company.customer_id
    assert pi["payment_method"] == company.payment_method_id
    (attempt,) = await wallets.attempts(company.company_id)
    assert pi["metadata"]["recharge_attempt_id"] == str(attempt["attempt_id"])
    assert charge_posts(fake)[0].idempotency_key == f"recharge-{attempt['attempt_id']}"
    assert attempt["status"] == "succeeded" and attempt["payment_intent_id"] == pi["id"]

    (credit,) = await wallets.credits(company.company_id)
    assert credit["entry_type"] == "recharge_credit" and credit["amount_nanos"] == usd(50)
    assert credit["reference"] == pi["id"] and credit["recharge_attempt_id"] == attempt["attempt_id"]
    assert credit["description"] == "Auto-recharge from Visa •••• 4242"
    assert await wallets.balance(company.company_id) == usd(20) - 1000 * CALL_MINUTE_NANOS + usd(50)

    # wallet_* events (suspension) are not the recharge engine's to assert here; the opening balance
    # causes one.
    events = [(e, p) for e, p in await wallets.events(company.company_id) if not e.startswith("wallet_")]
    assert [e for e, _ in events] == ["balance_below_minimum", "recharge_started", "recharge_succeeded"]
    assert events[1][1]["amount_nanos"] == usd(50) and events[1][1]["kind"] == "auto"
    assert events[2][1]["payment_intent_id"] == pi["id"]
    await asyncio.sleep(0.3)
    assert len(charges(fake)) == 1  # and nothing more happens afterwards


def call(company_id: str, key: str, seconds: int) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company_id,
        idempotency_key=key,
        usage=usage_pb2.Usage(
            call=usage_pb2.CallUsage(
                direction=usage_pb2.CALL_DIRECTION_OUTBOUND,
                number_type=usage_pb2.NUMBER_TYPE_LOCAL,
                duration_seconds=seconds,
            )
        ),
    )


async def _credited(wallets: Wallets, company_id: str, count: int = 1) -> bool:
    return len(await wallets.credits(company_id)) >= count


async def _settled(wallets: Wallets, company_id: str) -> bool:
    rows = await wallets.attempts(company_id)
    return bool(rows) and all(r["status"] not in ("pending", "processing") for r in rows)


# ---- amount and cap ---------------------------------------------------------------------------------


async def test_burst_far_below_minimum_is_one_charge_of_the_smallest_sufficient_multiple(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(20), minimum_nanos=usd(10), recharge_nanos=usd(50))
    # The burst lands before the loop runs: $20 - $168 = -$148; reaching $10 needs $158 -> 4 x $50.
    await wallets.debit_minutes(company.company_id, 12_000)
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    (pi,) = charges(fake)
    assert pi["amount"] == 4 * 5000
    (credit,) = await wallets.credits(company.company_id)
    assert credit["amount_nanos"] == usd(200)
    assert await wallets.balance(company.company_id) == usd(52)
    started = await wallets.events(company.company_id, prefix="recharge_started")
    assert started[0][1]["multiple"] == 4


async def test_monthly_cap_is_never_exceeded_and_blocking_is_reported_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, pool: asyncpg.Pool
) -> None:
    # Cap $120, recharge $50: the first need is charged in full ($50); the second, a burst needing
    # $150, gets the $50 that still fits (2 x 50 would pass 120) and a recharge_blocked_by_cap event;
    # the third gets nothing, and no second event.
    company = await wallets.create(
        balance_nanos=usd(20), minimum_nanos=usd(10), recharge_nanos=usd(50), cap_nanos=usd(120)
    )
    await start_loop()
    await wallets.debit_minutes(company.company_id, 1000)  # -> $6
    await wait_until(lambda: _credited(wallets, company.company_id, 1), what="first credit")
    await wallets.debit_minutes(company.company_id, 10_000)  # $56 - $140 = -$84: needs 2 x $50
    await wait_until(lambda: _credited(wallets, company.company_id, 2), what="second credit")
    await wallets.debit_minutes(company.company_id, 1000)
    await asyncio.sleep(1.0)  # several sweeps: nothing more may be charged

    assert [pi["amount"] for pi in charges(fake)] == [5000, 5000]
    assert sum(pi["amount"] for pi in charges(fake)) <= 12_000
    blocked = await wallets.events(company.company_id, prefix="recharge_blocked_by_cap")
    assert len(blocked) == 1
    assert blocked[0][1]["wanted_nanos"] == usd(100) and blocked[0][1]["allowed_nanos"] == usd(50)
    assert blocked[0][1]["monthly_cap_nanos"] == usd(120)
    assert await pool.fetchval(
        "select recharge_blocked_by_cap_at is not null from billing_settings where company_id = $1",
        company.company_id,
    )


async def test_cap_counts_only_this_calendar_month(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, pool: asyncpg.Pool
) -> None:
    company = await wallets.create(
        balance_nanos=usd(5), minimum_nanos=usd(10), recharge_nanos=usd(50), cap_nanos=usd(50)
    )
    # A $50 recharge from last month (succeeded, credited in its day) does not count against this one.
    await pool.execute(
        """
        insert into recharge_attempts (attempt_id, company_id, kind, amount_nanos, status,
                                       provider_customer_id, payment_method_id, card_brand, card_last4,
                                       created_at, settled_at)
        values ($1, $2, 'auto', $3, 'succeeded', $4, $5, 'visa', '4242',
                date_trunc('month', now() at time zone 'utc') at time zone 'utc' - interval '1 hour',
                date_trunc('month', now() at time zone 'utc') at time zone 'utc' - interval '1 hour')
        """,
        uuid.uuid4(),
        company.company_id,
        usd(50),
        company.customer_id,
        company.payment_method_id,
    )
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    assert [pi["amount"] for pi in charges(fake)] == [5000]


# ---- outcomes ---------------------------------------------------------------------------------------


async def test_soft_declines_retry_as_new_attempts_after_backoff_then_pause(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card="pm_card_chargeDeclinedInsufficientFunds")
    await start_loop()
    await wait_until(
        lambda: _paused(wallets, company.company_id), timeout_s=15, what="pause after the last soft decline"
    )
    attempts = await wallets.attempts(company.company_id)
    # FAST has three backoffs: the first attempt and three retries, each a new attempt and a new key.
    assert [a["status"] for a in attempts] == ["soft_declined"] * 4
    assert [a["retry_number"] for a in attempts] == [0, 1, 2, 3]
    assert [a["decline_code"] for a in attempts] == ["insufficient_funds"] * 4
    assert len({a["attempt_id"] for a in attempts}) == 4
    for earlier, later in itertools.pairwise(attempts):
        # The next retry time is the backoff after the decline, and the retry waits for it.
        assert earlier["next_attempt_at"] == earlier["settled_at"] + dt.timedelta(seconds=0.3)
        assert later["created_at"] >= earlier["next_attempt_at"]
    assert attempts[-1]["next_attempt_at"] is None
    assert await wallets.paused_reason(company.company_id) == "soft_decline_retries_exhausted"
    assert len(charges(fake)) == 4 and len({r.idempotency_key for r in charge_posts(fake)}) == 4
    assert await wallets.credits(company.company_id) == []

    events = await wallets.events(company.company_id, prefix="recharge_")
    failed = [p for e, p in events if e == "recharge_failed"]
    assert [p["outcome"] for p in failed] == ["soft_decline"] * 4
    assert [p["next_retry_at"] is not None for p in failed] == [True, True, True, False]
    assert events[-1] == (
        "recharge_paused",
        {
            "reason": "soft_decline_retries_exhausted",
            "attempt_id": str(attempts[-1]["attempt_id"]),
            "kind": "auto",
        },
    )
    await asyncio.sleep(0.8)
    assert len(charges(fake)) == 4  # paused: no more attempts


async def _paused(wallets: Wallets, company_id: str) -> bool:
    return await wallets.paused_reason(company_id) is not None


@pytest.mark.parametrize(
    ("card", "status", "decline_code", "reason"),
    [
        ("pm_card_chargeDeclinedLostCard", "hard_declined", "lost_card", "hard_decline"),
        ("pm_card_chargeDeclinedExpiredCard", "hard_declined", "expired_card", "hard_decline"),
        (
            "pm_card_authenticationRequired",
            "requires_action",
            "authentication_required",
            "authentication_required",
        ),
    ],
)
async def test_hard_decline_and_authentication_required_pause_until_a_new_card(
    wallets: Wallets,
    fake: FakeStripe,
    start_loop: StartLoop,
    card: str,
    status: str,
    decline_code: str,
    reason: str,
) -> None:
    company = await wallets.create(balance_nanos=usd(5), card=card)
    await start_loop()
    await wait_until(lambda: _paused(wallets, company.company_id), what="the pause")
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == status and attempt["decline_code"] == decline_code
    assert attempt["next_attempt_at"] is None and attempt["payment_intent_id"] == charges(fake)[0]["id"]
    assert await wallets.paused_reason(company.company_id) == reason
    events = await wallets.events(company.company_id, prefix="recharge_")
    assert [e for e, _ in events] == ["recharge_started", "recharge_failed", "recharge_paused"]
    assert events[1][1]["next_retry_at"] is None and events[1][1]["decline_code"] == decline_code
    await asyncio.sleep(0.8)
    assert len(charges(fake)) == 1 and await wallets.credits(company.company_id) == []

    # The company sets a working card: the pause lifts and the recharge goes through at once.
    await wallets.set_card(company, "pm_card_visa")
    await wait_until(lambda: _credited(wallets, company.company_id), what="credit on the new card")
    assert len(charges(fake)) == 2 and await wallets.paused_reason(company.company_id) is None


async def test_a_refused_charge_is_final_and_pauses_until_a_new_card(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    """Stripe refuses the charge request itself (here a 400, as for a card detached meanwhile): nothing
    was charged and the same request would be refused again, so the attempt ends instead of retrying."""
    company = await wallets.create(balance_nanos=usd(5))
    fake.fail_requests(
        400, path="/v1/payment_intents", code="resource_missing", message="No such PaymentMethod"
    )
    await start_loop()
    await wait_until(lambda: _paused(wallets, company.company_id), what="the pause")
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == "hard_declined" and attempt["next_attempt_at"] is None
    assert attempt["payment_intent_id"] is None and "No such PaymentMethod" in attempt["last_error"]
    assert await wallets.paused_reason(company.company_id) == "provider_refused"
    events = [e for e, _ in await wallets.events(company.company_id, prefix="recharge_")]
    assert events == ["recharge_started", "recharge_failed", "recharge_paused"]
    await asyncio.sleep(0.8)
    assert charges(fake) == [] and await wallets.credits(company.company_id) == []

    await wallets.set_card(company, "pm_card_visa")
    await wait_until(lambda: _credited(wallets, company.company_id), what="credit after a new card")
    assert len(charges(fake)) == 1 and await wallets.paused_reason(company.company_id) is None


async def test_a_charge_refused_after_its_card_was_removed_keeps_the_removal_as_the_reason(
    wallets: Wallets, pool: asyncpg.Pool, fake: FakeStripe, start_loop: StartLoop
) -> None:
    """An attempt planned with a card that is then removed (detached at Stripe, forgotten here, paused
    as card_removed) is refused when it reaches Stripe. That refusal is about a card nobody will charge
    again: the attempt ends, and the company still reads "card_removed", not "provider_refused"."""
    company = await wallets.create(balance_nanos=usd(5))
    async with pool.acquire() as conn:
        planned = await planning.plan_recharge(conn, company.company_id)
    assert planned.attempt_id is not None
    await wallets.provider.detach_payment_method(company.payment_method_id, f"detach-{company.company_id}")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("delete from payment_cards where company_id = $1", company.company_id)
        await conn.execute(
            "update billing_settings set auto_recharge_paused_reason = 'card_removed' where company_id = $1",
            company.company_id,
        )

    await start_loop()
    await wait_until(
        lambda: _has_status(wallets, company.company_id, "hard_declined"), what="the refused attempt"
    )
    assert await wallets.paused_reason(company.company_id) == "card_removed"
    events = [e for e, _ in await wallets.events(company.company_id, prefix="recharge_")]
    assert events == ["recharge_started", "recharge_failed"]
    assert charges(fake) == [] and await wallets.credits(company.company_id) == []


async def test_rejected_credentials_keep_the_attempt_open_for_an_operator(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    """A wrong API key is the operator's problem: no company is paused, and once the key works the same
    attempt goes through with the same idempotency key."""
    company = await wallets.create(balance_nanos=usd(5))
    fake.fail_requests(401, path="/v1/payment_intents", times=2, message="Invalid API Key provided")
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit once the key works")
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == "succeeded" and attempt["call_count"] == 3
    assert await wallets.paused_reason(company.company_id) is None
    posts = charge_posts(fake)
    assert len(posts) == 3 and len({p.idempotency_key for p in posts}) == 1


async def test_processing_waits_without_charging_again_then_credits_when_it_settles(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    fake.program_charge(ChargeOutcome.processing())
    await start_loop()
    await wait_until(lambda: _has_status(wallets, company.company_id, "processing"), what="processing")
    await asyncio.sleep(0.8)  # several polls and sweeps
    (pi,) = charges(fake)
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == "processing" and attempt["next_attempt_at"] is not None
    assert len(charge_posts(fake)) == 1
    assert [e for e, _ in await wallets.events(company.company_id, prefix="recharge_")] == [
        "recharge_started",
        "recharge_processing",
    ]
    # The bank settles it; the loop's poll (retrieve) finds out.
    fake.settle_payment_intent(pi["id"], ChargeOutcome.succeeded())
    await wait_until(lambda: _credited(wallets, company.company_id), what="credit after settling")
    assert len(charge_posts(fake)) == 1 and len(await wallets.credits(company.company_id)) == 1
    assert any(r.method == "GET" and r.path == f"/v1/payment_intents/{pi['id']}" for r in fake.requests)


async def _has_status(wallets: Wallets, company_id: str, status: str) -> bool:
    return any(a["status"] == status for a in await wallets.attempts(company_id))


@pytest.mark.parametrize("http_status", [500, 409, 429])
async def test_unknown_outcome_retries_the_same_attempt_with_the_same_key(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, http_status: int
) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    fake.fail_requests(http_status, path="/v1/payment_intents", times=2)
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    posts = charge_posts(fake)
    assert [p.status for p in posts] == [http_status, http_status, 200]
    (attempt,) = await wallets.attempts(company.company_id)
    assert {p.idempotency_key for p in posts} == {f"recharge-{attempt['attempt_id']}"}
    assert attempt["call_count"] == 3 and attempt["status"] == "succeeded"
    assert len(charges(fake)) == 1 and len(await wallets.credits(company.company_id)) == 1
    events = await wallets.events(company.company_id, prefix="recharge_")
    assert [e for e, _ in events] == [
        "recharge_started",
        "recharge_retrying",
        "recharge_retrying",
        "recharge_succeeded",
    ]
    retrying = [p for e, p in events if e == "recharge_retrying"]
    assert [p["outcome"] for p in retrying] == ["unknown", "unknown"]
    assert all(p["same_attempt"] and p["next_retry_at"] for p in retrying)


async def test_lost_response_retry_finds_the_same_payment_intent(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    """The fake commits the charge and drops the connection; the same-key retry gets the same PI."""
    company = await wallets.create(balance_nanos=usd(5))
    fake.drop_connection(after_commit=True, path="/v1/payment_intents")
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    posts = charge_posts(fake)
    assert [(p.status, p.replayed) for p in posts] == [(None, False), (200, True)]
    assert posts[0].idempotency_key == posts[1].idempotency_key
    (pi,) = charges(fake)
    (credit,) = await wallets.credits(company.company_id)
    assert credit["reference"] == pi["id"]


# ---- reconciliation ---------------------------------------------------------------------------------


async def _old_pending_attempt(pool: asyncpg.Pool, company_id: str, customer: str, pm: str) -> uuid.UUID:
    """A pending attempt left behind by a crash 25 hours ago (outside the idempotency window)."""
    attempt_id = uuid.uuid4()
    await pool.execute(
        """
        insert into recharge_attempts (attempt_id, company_id, kind, amount_nanos, provider_customer_id,
                                       payment_method_id, card_brand, card_last4, next_attempt_at, created_at)
        values ($1, $2, 'auto', $3, $4, $5, 'visa', '4242', now(), now() - interval '25 hours')
        """,
        attempt_id,
        company_id,
        usd(50),
        customer,
        pm,
    )
    return attempt_id


async def test_after_the_window_a_charge_that_exists_is_found_by_metadata_not_charged_again(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, pool: asyncpg.Pool, provider: object
) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    attempt_id = await _old_pending_attempt(
        pool, company.company_id, company.customer_id, company.payment_method_id
    )
    # The crashed process had reached Stripe: the PaymentIntent exists, with our metadata.
    await wallets.provider.charge(
        company.customer_id,
        company.payment_method_id,
        5000,
        attempts.idempotency_key(attempt_id),
        {"recharge_attempt_id": str(attempt_id), "company_id": company.company_id, "kind": "auto"},
        "left behind",
    )
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    assert len(charge_posts(fake)) == 1  # only the one from before the "crash"
    assert any(r.method == "GET" and r.path == "/v1/payment_intents" for r in fake.requests)
    (credit,) = await wallets.credits(company.company_id)
    assert credit["recharge_attempt_id"] == attempt_id and credit["reference"] == charges(fake)[0]["id"]


async def test_after_the_window_a_charge_never_made_expires_and_a_new_attempt_charges_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, pool: asyncpg.Pool
) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    old = await _old_pending_attempt(pool, company.company_id, company.customer_id, company.payment_method_id)
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    attempts = await wallets.attempts(company.company_id)
    assert [(a["attempt_id"] == old, a["status"]) for a in attempts] == [
        (True, "expired"),
        (False, "succeeded"),
    ]
    (pi,) = charges(fake)
    assert pi["metadata"]["recharge_attempt_id"] == str(attempts[1]["attempt_id"])


# ---- pre-load ---------------------------------------------------------------------------------------


async def test_first_card_is_charged_the_preload_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(
        balance_nanos=0, minimum_nanos=usd(10), auto=True, preload_nanos=usd(25), card=None
    )
    await start_loop(replace(FAST, sweep_interval_s=300.0))
    # As SettingsService does for a first card: first_card_set_at, card_set event, recharge_wanted.
    customer = await wallets.provider.create_customer(company.company_id, f"cus2-{company.company_id}")
    await wallets.pool.execute(
        "insert into payment_customers (company_id, provider_customer_id) values ($1, $2)",
        company.company_id,
        customer,
    )
    company = await wallets.set_card(replace(company, customer_id=customer), "pm_card_mastercard")
    await wait_until(lambda: _credited(wallets, company.company_id), what="the pre-load")
    (credit,) = await wallets.credits(company.company_id)
    assert credit["entry_type"] == "preload_credit" and credit["amount_nanos"] == usd(25)
    assert credit["description"] == "Pre-load from Mastercard •••• 4444"
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["kind"] == Kind.PRELOAD and attempt["status"] == "succeeded"
    # $25 lifted the wallet above its $10 minimum, so no auto-recharge follows; a second card is no
    # new pre-load.
    await wallets.set_card(company, "pm_card_visa")
    await asyncio.sleep(0.5)
    assert len(charges(fake)) == 1
    events = await wallets.events(company.company_id, prefix="recharge_")
    assert [e for e, _ in events] == ["recharge_started", "recharge_succeeded"]


async def test_preload_then_auto_recharge_when_the_preload_is_not_enough(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=0, minimum_nanos=usd(30), preload_nanos=usd(20))
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id, 2), what="pre-load and recharge")
    kinds = [c["entry_type"] for c in await wallets.credits(company.company_id)]
    assert kinds == ["preload_credit", "recharge_credit"]
    assert [pi["amount"] for pi in charges(fake)] == [2000, 5000]
    assert await wallets.balance(company.company_id) == usd(70)


# ---- at most one in flight --------------------------------------------------------------------------


async def test_database_refuses_a_second_attempt_in_flight(wallets: Wallets, pool: asyncpg.Pool) -> None:
    company = await wallets.create(balance_nanos=usd(5))
    async with pool.acquire() as conn:
        first = await planning.plan_recharge(conn, company.company_id)
        assert first.attempt_id is not None
        second = await planning.plan_recharge(conn, company.company_id)
    assert second.attempt_id is None and second.decision.reason == "in_flight"
    with pytest.raises(asyncpg.UniqueViolationError):
        await _old_pending_attempt(pool, company.company_id, company.customer_id, company.payment_method_id)


async def test_two_loops_woken_together_make_one_attempt(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    company = await wallets.create(balance_nanos=usd(20))
    await start_loop(replace(FAST, sweep_interval_s=300.0))
    await start_loop(replace(FAST, sweep_interval_s=300.0))
    await asyncio.sleep(0.1)
    await wallets.debit_minutes(company.company_id, 1000)
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    await asyncio.sleep(0.3)
    assert len(charges(fake)) == 1 and len(await wallets.attempts(company.company_id)) == 1


async def test_loop_settings_from_config_use_the_documented_names() -> None:
    config = load_config(
        {
            "BILLING_RECHARGE_SWEEP_INTERVAL_S": "2.5",
            "BILLING_RECHARGE_RETRY_BACKOFF_S": "10,20",
            "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S": "1",
            "BILLING_RECHARGE_LEASE_S": "7",
        }
    )
    settings = LoopSettings.from_config(config)
    assert settings.sweep_interval_s == 2.5 and settings.lease_s == 7.0
    assert settings.backoff == outcomes.Backoff((10.0, 20.0), (1.0,))
    assert settings.call_timeout_s < settings.lease_s


# ---- with the real SettingsService ------------------------------------------------------------------


async def test_first_card_set_through_settings_service_is_preloaded_once(
    billing: BillingServer, fake: FakeStripe, pool: asyncpg.Pool
) -> None:
    """The whole path: CreateWallet, StartCardSetup, SetDefaultCard (gRPC) -> NOTIFY recharge_wanted ->
    the loop charges the pre-load (default $50) through the real stripe library -> one credit."""
    from consofta.billing.v1 import (
        settings_service_pb2,
        settings_service_pb2_grpc,
        wallet_service_pb2,
        wallet_service_pb2_grpc,
    )

    async with grpc.aio.insecure_channel(f"127.0.0.1:{billing.port}") as channel:
        wallet = wallet_service_pb2_grpc.WalletServiceStub(channel)
        settings = settings_service_pb2_grpc.SettingsServiceStub(channel)
        await wallet.CreateWallet(
            wallet_service_pb2.CreateWalletRequest(company_id="acme", display_name="Acme", request_id="c-1")
        )
        await settings.StartCardSetup(
            settings_service_pb2.StartCardSetupRequest(company_id="acme", request_id="s-1")
        )
        await settings.SetDefaultCard(
            settings_service_pb2.SetDefaultCardRequest(
                company_id="acme", payment_method_id="pm_card_visa", request_id="card-1"
            )
        )

        async def credited() -> bool:
            return bool(await pool.fetchval("select count(*) from ledger_entries where company_id = 'acme'"))

        await wait_until(credited, what="the pre-load")
        # A second card is not a first card: no second pre-load.
        await settings.SetDefaultCard(
            settings_service_pb2.SetDefaultCardRequest(
                company_id="acme", payment_method_id="pm_card_mastercard", request_id="card-2"
            )
        )
        await asyncio.sleep(0.5)
    (pi,) = charges(fake)
    assert pi["amount"] == 5000 and pi["metadata"]["kind"] == "preload"
    entries = await pool.fetch(
        "select entry_type, amount_nanos from ledger_entries where company_id = 'acme'"
    )
    assert [(e["entry_type"], e["amount_nanos"]) for e in entries] == [("preload_credit", usd(50))]
    rows = await pool.fetch("select event_type from wallet_events order by sequence")
    types = [r["event_type"] for r in rows if not r["event_type"].startswith("wallet_")]
    assert types[:3] == ["card_set", "recharge_started", "recharge_succeeded"]


async def test_a_network_blip_does_not_suspend_a_wallet_at_its_floor(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> None:
    """Suspension keys on recharge_failed; an unknown outcome is reported as retrying, not failed."""
    company = await wallets.create(balance_nanos=usd(-5))
    fake.fail_requests(500, path="/v1/payment_intents", times=1)
    await start_loop()
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")
    types = [e for e, _ in await wallets.events(company.company_id)]
    assert "recharge_retrying" in types and "recharge_failed" not in types
    assert "wallet_suspended" not in types
