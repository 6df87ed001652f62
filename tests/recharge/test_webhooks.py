"""Stripe webhooks: signatures checked on the raw body, deduplicated, forward-only, one credit always."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.metrics import REGISTRY
from service.payments.stripe_provider import StripeProvider
from service.recharge import outcomes
from service.recharge.loop import RechargeLoop
from service.recharge.webhooks import WEBHOOK_PATH, WebhookServer
from tests.support.fake_stripe import ChargeOutcome, FakeStripe

from .conftest import FAST, Company, Wallets, charge_posts, charges, wait_until

StartLoop = Callable[..., Awaitable[RechargeLoop]]
# Polls of a processing PaymentIntent wait a minute here, so only the webhook can settle it.
NO_POLL = replace(FAST, backoff=outcomes.Backoff(FAST.backoff.retry_backoff_s, (60.0,)))


@pytest.fixture
async def webhook_url(pool: asyncpg.Pool, provider: StripeProvider) -> AsyncIterator[str]:
    server = WebhookServer(pool, provider, FAST.backoff)
    await server.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.port}{WEBHOOK_PATH}"
    await server.stop()


async def post(url: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def send(
    fake: FakeStripe, url: str, event: dict[str, Any], **broken: Any
) -> tuple[int, dict[str, Any]]:
    body, signature = fake.signed_webhook(event, **broken)
    return await post(url, body, signature)


async def processing_company(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop
) -> tuple[Company, str]:
    """A company whose recharge PaymentIntent is processing; returns it and the PaymentIntent id."""
    company = await wallets.create(balance_nanos=0)
    fake.program_charge(ChargeOutcome.processing())
    await start_loop(NO_POLL)
    await wait_until(lambda: _status_is(wallets, company.company_id, "processing"), what="processing")
    (pi,) = charges(fake)
    return company, pi["id"]


async def _status_is(wallets: Wallets, company_id: str, status: str) -> bool:
    return [a["status"] for a in await wallets.attempts(company_id)] == [status]


def _delivered(result: str) -> float:
    return REGISTRY.get_sample_value("billing_stripe_webhooks_total", {"result": result}) or 0.0


async def _webhook_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("select * from stripe_webhook_events order by received_at")


async def test_tampered_wrong_secret_stale_or_unsigned_webhooks_get_400_and_change_nothing(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    succeeded = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    rejected_before = _delivered("rejected")

    assert (await send(fake, webhook_url, succeeded, tamper=True))[0] == 400
    assert (await send(fake, webhook_url, succeeded, wrong_secret=True))[0] == 400
    assert (await send(fake, webhook_url, succeeded, stale_by_s=301))[0] == 400
    body, _ = fake.signed_webhook(succeeded)
    assert (await post(webhook_url, body, None))[0] == 400
    assert (await post(webhook_url, body, "t=1,v1=deadbeef"))[0] == 400

    assert await _status_is(wallets, company.company_id, "processing")
    assert await wallets.credits(company.company_id) == []
    assert await _webhook_rows(pool) == []
    assert _delivered("rejected") - rejected_before == 5

    # The genuine delivery settles it.
    status, answer = await send(fake, webhook_url, succeeded)
    assert (status, answer["result"]) == (200, "applied")
    (credit,) = await wallets.credits(company.company_id)
    assert credit["reference"] == pi_id
    assert await _status_is(wallets, company.company_id, "succeeded")


async def test_the_same_event_three_times_credits_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    succeeded = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    before = {result: _delivered(result) for result in ("applied", "duplicate")}
    results = [await send(fake, webhook_url, succeeded) for _ in range(3)]
    assert [(s, a["result"]) for s, a in results] == [
        (200, "applied"),
        (200, "duplicate"),
        (200, "duplicate"),
    ]
    assert (_delivered("applied") - before["applied"], _delivered("duplicate") - before["duplicate"]) == (
        1,
        2,
    )
    assert len(await wallets.credits(company.company_id)) == 1
    assert [r["event_id"] for r in await _webhook_rows(pool)] == [succeeded["id"]]
    events = await wallets.events(company.company_id, prefix="recharge_succeeded")
    assert len(events) == 1


async def test_concurrent_deliveries_of_one_event_credit_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    succeeded = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    results = await asyncio.gather(*(send(fake, webhook_url, succeeded) for _ in range(5)))
    assert sorted(a["result"] for _, a in results) == ["applied"] + ["duplicate"] * 4
    assert len(await wallets.credits(company.company_id)) == 1


def failed_event(fake: FakeStripe, pi_id: str, decline_code: str = "insufficient_funds") -> dict[str, Any]:
    """The PaymentIntent fails at Stripe (the bank declined it), and the event Stripe sends for it.

    The PaymentIntent itself changes too: the webhook handler fetches it again with our key and
    trusts what it says, not the payload."""
    pi = fake.payment_intents[pi_id]
    pi.update(
        status="requires_payment_method",
        last_payment_error={"type": "card_error", "code": "card_declined", "decline_code": decline_code},
    )
    event = fake.make_event("payment_intent.payment_failed", copy.deepcopy(pi))
    return event


async def test_a_failure_after_a_success_changes_nothing(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str, pool: asyncpg.Pool
) -> None:
    company = await wallets.create(balance_nanos=0)
    await start_loop()
    await wait_until(lambda: _status_is(wallets, company.company_id, "succeeded"), what="success")
    (pi,) = charges(fake)
    # The success webhook arrives after the synchronous answer already credited: nothing more.
    status, answer = await send(fake, webhook_url, fake.events_of_type("payment_intent.succeeded")[0])
    assert (status, answer["result"]) == (200, "ignored_final")
    # Then a (late, out-of-order) failure for the same PaymentIntent.
    status, answer = await send(fake, webhook_url, failed_event(fake, pi["id"], "lost_card"))
    assert (status, answer["result"]) == (200, "ignored_final")
    assert await _status_is(wallets, company.company_id, "succeeded")
    assert len(await wallets.credits(company.company_id)) == 1
    assert await wallets.paused_reason(company.company_id) is None
    assert [e for e, _ in await wallets.events(company.company_id, prefix="recharge_")] == [
        "recharge_started",
        "recharge_succeeded",
    ]
    assert [r["outcome"] for r in await _webhook_rows(pool)] == ["ignored_final", "ignored_final"]


async def test_webhook_before_the_synchronous_response_credits_once(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str
) -> None:
    company = await wallets.create(balance_nanos=0)
    # Stripe commits the charge at once but its HTTP answer takes 1.5 s; the webhook overtakes it.
    fake.delay_responses(1.5, method="POST", path="/v1/payment_intents")
    await start_loop()
    await wait_until(
        lambda: _async_true(bool(fake.events_of_type("payment_intent.succeeded"))), what="charge"
    )
    (post_record,) = charge_posts(fake)
    assert post_record.status is None  # the synchronous answer has not been sent yet
    status, answer = await send(fake, webhook_url, fake.events_of_type("payment_intent.succeeded")[0])
    assert (status, answer["result"]) == (200, "applied")
    assert len(await wallets.credits(company.company_id)) == 1

    # Now the synchronous answer arrives and is recorded: it finds the attempt settled.
    await wait_until(lambda: _async_true(post_record.status == 200), what="the synchronous answer")
    await wait_until(lambda: _lease_released(wallets, company.company_id), what="the loop to record it")
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == "succeeded" and attempt["call_count"] == 1
    assert len(await wallets.credits(company.company_id)) == 1
    assert len(await wallets.events(company.company_id, prefix="recharge_succeeded")) == 1
    assert len(charges(fake)) == 1


async def _async_true(value: bool) -> bool:
    return value


async def _lease_released(wallets: Wallets, company_id: str) -> bool:
    # The webhook's write clears the lease; the loop's later record of the same outcome is a no-op.
    # Wait a little beyond the answer so that the loop has had its turn.
    await asyncio.sleep(0.2)
    return all(a["lease_owner"] is None for a in await wallets.attempts(company_id))


async def test_failed_webhook_for_a_processing_charge_applies_the_decline(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str
) -> None:
    company, pi_id = await processing_company(wallets, fake, start_loop)
    status, answer = await send(fake, webhook_url, failed_event(fake, pi_id, "stolen_card"))
    assert (status, answer["result"]) == (200, "applied")
    (attempt,) = await wallets.attempts(company.company_id)
    assert attempt["status"] == "hard_declined" and attempt["decline_code"] == "stolen_card"
    assert await wallets.paused_reason(company.company_id) == "hard_decline"
    assert await wallets.credits(company.company_id) == []


async def test_events_for_payment_intents_we_did_not_create_are_acknowledged_and_ignored(
    fake: FakeStripe, webhook_url: str, pool: asyncpg.Pool
) -> None:
    stranger = {
        "id": "pi_not_ours",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 100,
        "metadata": {},
    }
    event = fake.make_event("payment_intent.succeeded", stranger)
    status, answer = await send(fake, webhook_url, event)
    assert (status, answer["result"]) == (200, "unknown_attempt")
    other = fake.make_event("customer.created", {"id": "cus_x", "object": "customer"})
    assert (await send(fake, webhook_url, other))[1]["result"] == "ignored_type"
    assert await pool.fetchval("select count(*) from ledger_entries") == 0


async def test_webhook_body_is_verified_byte_for_byte(
    wallets: Wallets, fake: FakeStripe, start_loop: StartLoop, webhook_url: str
) -> None:
    """Re-serializing the JSON (same content, other whitespace) breaks the signature, as with Stripe."""
    company, pi_id = await processing_company(wallets, fake, start_loop)
    succeeded = fake.settle_payment_intent(pi_id, ChargeOutcome.succeeded())
    body, signature = fake.signed_webhook(succeeded)
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert (await post(webhook_url, compact, signature))[0] == 400
    assert (await post(webhook_url, body, signature))[0] == 200
    assert len(await wallets.credits(company.company_id)) == 1
