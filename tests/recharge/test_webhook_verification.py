"""A validly signed webhook credits only what the PaymentIntent, fetched again with our key, says, and
only when it matches the attempt: customer, currency, amount, the attempt's own PaymentIntent, and our
key's mode. A mismatch credits nothing, is kept for review and is logged at ERROR. Two webhook secrets
verify at once, so one can be rotated."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import structlog

from service.config import load_config
from service.domain.money import NANOS_PER_CENT
from service.payments.factory import make_provider
from service.payments.provider import PaymentProvider
from service.payments.stripe_provider import StripeProvider
from service.recharge.loop import RechargeLoop
from service.recharge.webhooks import WEBHOOK_PATH, WebhookServer
from tests.support.cli import run
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, ChargeOutcome, FakeStripe

from .conftest import FAST, Wallets, wait_until
from .test_webhooks import processing_company, send

StartLoop = Callable[..., Awaitable[RechargeLoop]]
NEW_SECRET = "whsec_" + "rotatedNewSecret0123456789"


async def _serve(pool: asyncpg.Pool, provider: PaymentProvider) -> AsyncIterator[str]:
    server = WebhookServer(pool, provider, FAST.backoff)
    await server.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.port}{WEBHOOK_PATH}"
    await server.stop()


@pytest.fixture
async def webhook_url(pool: asyncpg.Pool, provider: StripeProvider) -> AsyncIterator[str]:
    async for url in _serve(pool, provider):
        yield url


async def _reviews(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("select * from stripe_webhook_reviews order by received_at")


async def _attempt_status(wallets: Wallets, company_id: str) -> list[str]:
    return [a["status"] for a in await wallets.attempts(company_id)]


# What the PaymentIntent, as Stripe itself answers for it, says differently from the attempt.
MISMATCHES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "customer": ({"customer": "cus_someone_else"}, ["customer"]),
    "currency": ({"currency": "jpy"}, ["currency"]),
    "amount": ({"amount": 1_000_000}, ["amount"]),
    "livemode": ({"livemode": True}, ["livemode"]),
    # The issue's own demonstration: another customer's PaymentIntent, in JPY, for 1,000,000.
    "everything": (
        {"customer": "cus_someone_else", "currency": "jpy", "amount": 1_000_000},
        ["customer", "currency", "amount"],
    ),
}


@pytest.mark.parametrize("mismatch", sorted(MISMATCHES))
async def test_a_signed_success_that_does_not_match_its_attempt_credits_nothing_and_is_held_for_review(
    mismatch: str,
    wallets: Wallets,
    fake: FakeStripe,
    start_loop: StartLoop,
    webhook_url: str,
    pool: asyncpg.Pool,
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    changes, reasons = MISMATCHES[mismatch]
    genuine = copy.deepcopy(fake.payment_intents[pi_id])
    event = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    # Stripe now answers for this PaymentIntent with the changed fields; the payload says the same.
    fake.payment_intents[pi_id].update(changes)
    event["data"]["object"].update(changes)

    with structlog.testing.capture_logs() as logs:
        status, answer = await send(fake, webhook_url, event)

    assert (status, answer["result"]) == (200, "held_for_review")
    assert await wallets.credits(company.company_id) == []
    assert await _attempt_status(wallets, company.company_id) == ["processing"]
    (review,) = await _reviews(pool)
    assert review["event_id"] == event["id"] and review["company_id"] == company.company_id
    assert list(review["reasons"]) == reasons
    outcome = await pool.fetchval(
        "select outcome from stripe_webhook_events where event_id = $1", event["id"]
    )
    assert outcome == "held_for_review"
    errors = [line for line in logs if line["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["reasons"] == reasons
    # A redelivery of the same event changes nothing either.
    assert (await send(fake, webhook_url, event))[1]["result"] == "duplicate"

    # The genuine PaymentIntent, once Stripe says so, still settles the attempt.
    fake.payment_intents[pi_id].update(genuine, status="succeeded")
    genuine_event = fake.make_event("payment_intent.succeeded", fake.payment_intents[pi_id])
    assert (await send(fake, webhook_url, genuine_event))[1]["result"] == "applied"
    (credit,) = await wallets.credits(company.company_id)
    assert credit["amount_nanos"] == genuine["amount"] * NANOS_PER_CENT


async def test_a_held_event_is_listed_and_resolved_once_by_an_operator(
    wallets: Wallets,
    fake: FakeStripe,
    start_loop: StartLoop,
    webhook_url: str,
    pool: asyncpg.Pool,
    db_url: str,
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    event = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    fake.payment_intents[pi_id].update(currency="eur")
    event["data"]["object"].update(currency="eur")
    assert (await send(fake, webhook_url, event))[1]["result"] == "held_for_review"

    listed = await run("stripe-reviews", "list", "--json", database_url=db_url)
    assert listed.code == 0, listed.err
    (review,) = json.loads(listed.out)["reviews"]
    assert (review["event_id"], review["company_id"], review["reasons"]) == (
        event["id"],
        company.company_id,
        ["currency"],
    )
    assert review["resolved_at"] is None and review["details"]

    resolution = "checked in Stripe: refunded the EUR charge, no credit due"
    first = await run(
        "stripe-reviews", "resolve", event["id"], "--resolution", resolution, database_url=db_url
    )
    assert first.code == 0, first.err
    assert first.out == f"Stripe webhook event {event['id']} of {company.company_id} resolved\n"
    again = await run(
        "stripe-reviews", "resolve", event["id"], "--resolution", resolution, database_url=db_url
    )
    assert again.code == 0 and "already resolved so (nothing changed)" in again.out
    other = await run(
        "stripe-reviews", "resolve", event["id"], "--resolution", "credited", database_url=db_url
    )
    assert other.code == 1 and "was already resolved at" in other.err and "refunded the EUR" in other.err
    row = await pool.fetchrow(
        "select resolution, resolved_by from stripe_webhook_reviews where event_id = $1", event["id"]
    )
    assert row["resolution"] == resolution and row["resolved_by"].startswith("cli:")
    # Resolved events leave the default list; --all shows them.
    assert json.loads((await run("stripe-reviews", "list", "--json", database_url=db_url)).out) == {
        "reviews": []
    }
    everything = await run("stripe-reviews", "list", "--all", database_url=db_url)
    assert event["id"] in everything.out and "resolved by cli:" in everything.out
    assert await wallets.credits(company.company_id) == []


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("evt_nothing", "--resolution", "x"), 1, "no Stripe webhook event 'evt_nothing' is held for review"),
        (("evt bad\n", "--resolution", "x"), 2, "event_id: 'evt bad\\n' is not a Stripe event id"),
        (("evt_1", "--resolution", " "), 2, "resolution: is required"),
        (("evt_1",), 2, "the following arguments are required: --resolution"),
    ],
)
async def test_resolving_names_what_is_wrong(
    db_url: str, args: tuple[str, ...], code: int, says: str
) -> None:
    result = await run("stripe-reviews", "resolve", *args, database_url=db_url)
    assert result.code == code
    assert says in result.err, result.err


async def test_the_payload_is_not_trusted_only_the_payment_intent_fetched_with_our_key(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    """The event says succeeded for 1,000,000 JPY; Stripe says the PaymentIntent is still processing
    at the attempt's $50: nothing is credited, because nothing succeeded yet."""
    company, pi_id = await processing_company(wallets, fake, start_loop)
    lie = copy.deepcopy(fake.payment_intents[pi_id])
    lie.update(status="succeeded", amount=1_000_000, currency="jpy")
    status, _answer = await send(fake, webhook_url, fake.make_event("payment_intent.succeeded", lie))
    assert status == 200
    assert await wallets.credits(company.company_id) == []
    assert await _attempt_status(wallets, company.company_id) == ["processing"]


async def test_a_foreign_payment_intent_naming_the_attempt_is_held_for_review(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    """Another PaymentIntent (same customer, amount and currency) whose metadata names an attempt that
    already has its own PaymentIntent: it is not that attempt's charge."""
    company, pi_id = await processing_company(wallets, fake, start_loop)
    foreign = copy.deepcopy(fake.payment_intents[pi_id])
    foreign.update(id="pi_foreign_one", status="succeeded")
    fake.payment_intents[foreign["id"]] = foreign
    status, answer = await send(fake, webhook_url, fake.make_event("payment_intent.succeeded", foreign))
    assert (status, answer["result"]) == (200, "held_for_review")
    (review,) = await _reviews(pool)
    assert list(review["reasons"]) == ["payment_intent"]
    assert await wallets.credits(company.company_id) == []


async def test_a_payment_intent_our_key_cannot_see_is_held_for_review(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    unseen = copy.deepcopy(fake.payment_intents[pi_id])
    unseen.update(id="pi_other_account", status="succeeded")  # never stored at the fake
    status, answer = await send(fake, webhook_url, fake.make_event("payment_intent.succeeded", unseen))
    assert (status, answer["result"]) == (200, "held_for_review")
    (review,) = await _reviews(pool)
    assert list(review["reasons"]) == ["payment_intent_not_found"]
    assert await wallets.credits(company.company_id) == []


async def test_an_event_of_the_other_mode_is_held_for_review(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    event = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    event["livemode"] = True  # our key is a test key
    status, answer = await send(fake, webhook_url, event)
    assert (status, answer["result"]) == (200, "held_for_review")
    (review,) = await _reviews(pool)
    assert list(review["reasons"]) == ["event_livemode"]
    assert await wallets.credits(company.company_id) == []


async def test_an_unknown_outcome_of_the_fetch_asks_stripe_to_deliver_again(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    event = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    fake.fail_requests(500, method="GET", path=f"/v1/payment_intents/{pi_id}", times=1)
    assert (await send(fake, webhook_url, event))[0] == 503
    assert await pool.fetchval("select count(*) from stripe_webhook_events") == 0
    # Stripe's next delivery goes through.
    assert (await send(fake, webhook_url, event))[1]["result"] == "applied"
    await wait_until(lambda: _credited(wallets, company.company_id), what="the credit")


async def _credited(wallets: Wallets, company_id: str) -> bool:
    return len(await wallets.credits(company_id)) == 1


# ---- rotation ----------------------------------------------------------------------------------------


@pytest.fixture
async def rotating_url(pool: asyncpg.Pool, fake: FakeStripe) -> AsyncIterator[str]:
    """A provider built as the server builds it, from the environment, in the middle of a rotation."""
    config = load_config(
        {
            "BILLING_PAYMENT_PROVIDER": "stripe",
            "BILLING_STRIPE_SECRET_KEY": fake.api_key,
            "BILLING_STRIPE_API_BASE": fake.url,
            "BILLING_STRIPE_WEBHOOK_SECRET": NEW_SECRET,
            "BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS": DEFAULT_WEBHOOK_SECRET,
        }
    )
    provider = make_provider(config)
    try:
        async for url in _serve(pool, provider):
            yield url
    finally:
        await provider.aclose()


async def test_during_a_rotation_both_secrets_verify_and_no_other_does(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, rotating_url: str
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    event = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    assert (await send(fake, rotating_url, event, secret="whsec_" + "neitherOfThem"))[0] == 400
    status, answer = await send(fake, rotating_url, event, secret=DEFAULT_WEBHOOK_SECRET)
    assert (status, answer["result"]) == (200, "applied")
    status, answer = await send(fake, rotating_url, event, secret=NEW_SECRET)
    assert (status, answer["result"]) == (200, "duplicate")
    assert len(await wallets.credits(company.company_id)) == 1
