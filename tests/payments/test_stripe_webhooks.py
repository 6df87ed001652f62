"""Webhook verification with stripe's own check, on events the fake produced for real charges."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from service.payments.provider import CardDetails, ChargeStatus, InvalidWebhook, WebhookEvent
from service.payments.stripe_provider import StripeProvider
from service.payments.stripe_webhooks import WEBHOOK_TOLERANCE_S
from tests.support.fake_stripe import ChargeOutcome, FakeStripe

Key = Callable[[str], str]


async def charge_and_get_event(
    provider: StripeProvider, fake: FakeStripe, customer: str, card: CardDetails, key: Key, event_type: str
) -> dict[str, Any]:
    await provider.charge(
        customer, card.payment_method_id, 4_200, key("charge"), {"attempt_id": "att-7"}, "d"
    )
    [event] = fake.events_of_type(event_type)
    return event


async def test_a_valid_succeeded_event_is_parsed(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    event = await charge_and_get_event(provider, fake, customer, visa, key, "payment_intent.succeeded")
    payload, header = fake.signed_webhook(event)

    parsed = provider.parse_webhook(payload, header)

    assert parsed == WebhookEvent(
        id=event["id"],
        type="payment_intent.succeeded",
        created_at_s=event["created"],
        livemode=False,
        payment_intent_id=event["data"]["object"]["id"],
        status=ChargeStatus.SUCCEEDED,
        amount_cents=4_200,
        currency="usd",
        customer_id=customer,
        metadata={"attempt_id": "att-7"},
    )


@pytest.mark.parametrize(
    ("outcome", "status", "decline_code"),
    [
        (ChargeOutcome.declined("insufficient_funds"), ChargeStatus.SOFT_DECLINE, "insufficient_funds"),
        (ChargeOutcome.declined("stolen_card"), ChargeStatus.HARD_DECLINE, "stolen_card"),
    ],
)
async def test_a_payment_failed_event_carries_the_classified_decline(
    provider: StripeProvider,
    fake: FakeStripe,
    customer: str,
    visa: CardDetails,
    key: Key,
    outcome: ChargeOutcome,
    status: ChargeStatus,
    decline_code: str,
) -> None:
    fake.program_charge(outcome)
    event = await charge_and_get_event(provider, fake, customer, visa, key, "payment_intent.payment_failed")

    parsed = provider.parse_webhook(*fake.signed_webhook(event))

    assert (parsed.status, parsed.decline_code, parsed.message) == (status, decline_code, outcome.message)


async def test_a_requires_action_event(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    card = await provider.attach_payment_method(customer, "pm_card_authenticationRequired", key("a"))
    event = await charge_and_get_event(provider, fake, customer, card, key, "payment_intent.requires_action")

    assert provider.parse_webhook(*fake.signed_webhook(event)).status is ChargeStatus.REQUIRES_ACTION


async def test_a_non_payment_intent_event_is_parsed_without_payment_fields(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    event = fake.make_event("customer.updated", {"id": "cus_1", "object": "customer"})

    parsed = provider.parse_webhook(*fake.signed_webhook(event))

    assert (parsed.id, parsed.type, parsed.payment_intent_id, parsed.status) == (
        event["id"],
        "customer.updated",
        None,
        None,
    )


@pytest.mark.parametrize(
    "breakage",
    [
        {"tamper": True},
        {"wrong_secret": True},
        {"stale_by_s": WEBHOOK_TOLERANCE_S + 60},
    ],
    ids=["tampered-body", "wrong-secret", "stale-timestamp"],
)
async def test_broken_webhooks_are_refused(
    provider: StripeProvider,
    fake: FakeStripe,
    customer: str,
    visa: CardDetails,
    key: Key,
    breakage: dict[str, Any],
) -> None:
    event = await charge_and_get_event(provider, fake, customer, visa, key, "payment_intent.succeeded")

    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(*fake.signed_webhook(event, **breakage))


async def test_a_webhook_just_inside_the_tolerance_is_accepted(
    provider: StripeProvider, fake: FakeStripe
) -> None:
    event = fake.make_event("customer.updated", {"id": "cus_1", "object": "customer"})

    parsed = provider.parse_webhook(*fake.signed_webhook(event, stale_by_s=WEBHOOK_TOLERANCE_S - 30))

    assert parsed.id == event["id"]


@pytest.mark.parametrize("header", ["", "garbage", "t=123", "v1=abc"])
def test_malformed_signature_headers_are_refused(provider: StripeProvider, header: str) -> None:
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(b'{"id": "evt_1"}', header)


def test_a_correctly_signed_body_that_is_not_json_is_refused(provider: StripeProvider) -> None:
    payload = b"not json at all"

    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(payload, FakeStripe.sign(payload, "whsec_fake_stripe"))


@pytest.fixture
async def receiver(provider: StripeProvider) -> AsyncIterator[tuple[str, list[WebhookEvent]]]:
    """A minimal webhook endpoint, as the service will have: 200 when verified, 400 otherwise."""
    received: list[WebhookEvent] = []

    async def handle(request: web.Request) -> web.Response:
        try:
            event = provider.parse_webhook(await request.read(), request.headers.get("Stripe-Signature", ""))
        except InvalidWebhook:
            return web.Response(status=400)
        received.append(event)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/stripe/webhook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/stripe/webhook", received
    await runner.cleanup()


async def test_the_fake_delivers_signed_webhooks_over_http(
    provider: StripeProvider,
    fake: FakeStripe,
    customer: str,
    visa: CardDetails,
    key: Key,
    receiver: tuple[str, list[WebhookEvent]],
) -> None:
    url, received = receiver
    event = await charge_and_get_event(provider, fake, customer, visa, key, "payment_intent.succeeded")

    assert await fake.send_webhook(url, event) == 200
    assert await fake.send_webhook(url, event, tamper=True) == 400
    assert await fake.send_webhook(url, event, wrong_secret=True) == 400

    assert [e.id for e in received] == [event["id"]]
