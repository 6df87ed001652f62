"""The PaymentProvider contract, run against both providers: the sandbox, and Stripe over HTTP (fake).

The service codes against provider.py only, so whatever it relies on must hold for both. Where the
two legitimately differ, the test says so and asserts each side's behaviour explicitly.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import pytest

from service.payments.provider import (
    CardDetails,
    ChargeResult,
    ChargeStatus,
    IdempotencyConflict,
    InvalidWebhook,
    PaymentMethodRejected,
    PaymentProvider,
    PaymentProviderError,
)
from service.payments.sandbox_provider import SandboxProvider
from service.payments.stripe_provider import StripeProvider
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, ChargeOutcome, FakeStripe

Key = Callable[[str], str]
METADATA_KEY = "recharge_attempt_id"


@pytest.fixture(params=["sandbox", "stripe"])
async def provider(request: pytest.FixtureRequest, fake: FakeStripe) -> AsyncIterator[PaymentProvider]:
    # The fake server starts for both (an async fixture cannot be requested conditionally); the
    # sandbox never talks to it.
    made: PaymentProvider
    if request.param == "sandbox":
        made = SandboxProvider()
    else:
        made = StripeProvider(
            api_key=fake.api_key,
            api_base=fake.url,
            webhook_secret=DEFAULT_WEBHOOK_SECRET,
            timeout_s=5.0,
            max_network_retries=0,
        )
    yield made
    await made.aclose()


@pytest.fixture
async def customer(provider: PaymentProvider, key: Key) -> str:
    return await provider.create_customer("company-1", key("customer"))


async def attach(provider: PaymentProvider, customer: str, token: str, key: Key) -> CardDetails:
    return await provider.attach_payment_method(customer, token, key(f"attach-{token}"))


async def charge(
    provider: PaymentProvider,
    customer: str,
    card: CardDetails,
    key: str,
    *,
    amount_cents: int = 2_000,
    attempt: str = "attempt-1",
) -> ChargeResult:
    return await provider.charge(
        customer, card.payment_method_id, amount_cents, key, {METADATA_KEY: attempt}, "Wallet recharge"
    )


def is_stripe(provider: PaymentProvider) -> bool:
    return isinstance(provider, StripeProvider)


def test_both_providers_satisfy_the_protocol(provider: PaymentProvider) -> None:
    assert isinstance(provider, PaymentProvider)


# ---- customers and cards ---------------------------------------------------------------------------


async def test_create_customer_under_one_key_makes_one_customer(provider: PaymentProvider, key: Key) -> None:
    first = await provider.create_customer("company-1", key("c"))
    second = await provider.create_customer("company-1", key("c"))
    other = await provider.create_customer("company-1", key("c2"))

    assert first == second
    assert other != first


async def test_create_customer_reusing_a_key_for_another_company_is_a_conflict(
    provider: PaymentProvider, key: Key
) -> None:
    await provider.create_customer("company-1", key("c"))

    with pytest.raises(IdempotencyConflict):
        await provider.create_customer("company-2", key("c"))


async def test_setup_intent_has_an_id_and_a_secret_kept_out_of_repr(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    intent = await provider.create_setup_intent(customer, key("si"))

    assert intent.setup_intent_id
    assert intent.client_secret
    assert intent.client_secret not in repr(intent)
    assert intent == await provider.create_setup_intent(customer, key("si"))


async def test_setup_intent_for_an_unknown_customer_is_refused(provider: PaymentProvider, key: Key) -> None:
    with pytest.raises(PaymentProviderError):
        await provider.create_setup_intent("cus_does_not_exist", key("si"))


async def test_attach_turns_a_test_token_into_a_new_payment_method_with_card_details(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    assert card.payment_method_id != "pm_card_visa"
    assert card.payment_method_id.startswith("pm_")
    assert (card.brand, card.last4, card.exp_month) == ("visa", "4242", 12)
    assert card.exp_year > time.gmtime().tm_year
    assert card.fingerprint


async def test_attach_replayed_under_its_key_returns_the_same_card(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    first = await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))
    again = await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))

    assert again == first


async def test_one_card_number_keeps_its_fingerprint_across_payment_methods(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    first = await provider.attach_payment_method(customer, "pm_card_visa", key("a1"))
    second = await provider.attach_payment_method(customer, "pm_card_visa", key("a2"))
    other = await provider.attach_payment_method(customer, "pm_card_mastercard", key("a3"))

    assert first.payment_method_id != second.payment_method_id
    assert first.fingerprint == second.fingerprint != other.fingerprint


async def test_attach_of_a_card_the_provider_does_not_know_is_rejected_as_the_cards_fault(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    # An issuer refusing a real card at attach (the fake's reject_attach, a 402 card_error) has no
    # sandbox counterpart; test_stripe_provider.py covers it. An unknown card is refused by both.
    with pytest.raises(PaymentMethodRejected) as caught:
        await attach(provider, customer, "pm_card_doesNotExist", key)

    assert caught.value.reason


async def test_attach_to_an_unknown_customer_is_our_fault_not_the_cards(
    provider: PaymentProvider, key: Key
) -> None:
    with pytest.raises(PaymentProviderError) as caught:
        await attach(provider, "cus_does_not_exist", "pm_card_visa", key)

    assert not isinstance(caught.value, PaymentMethodRejected)


async def test_detach_then_detach_again_under_a_new_key_is_refused(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    await provider.detach_payment_method(card.payment_method_id, key("detach"))
    # The same key replays the first (successful) answer.
    await provider.detach_payment_method(card.payment_method_id, key("detach"))
    with pytest.raises(PaymentProviderError):
        await provider.detach_payment_method(card.payment_method_id, key("detach-2"))


async def test_a_detached_card_cannot_be_charged(provider: PaymentProvider, customer: str, key: Key) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    await provider.detach_payment_method(card.payment_method_id, key("detach"))

    with pytest.raises(PaymentProviderError):
        await charge(provider, customer, card, key("charge"))


# ---- charges -----------------------------------------------------------------------------------------


async def test_a_good_card_is_charged(provider: PaymentProvider, customer: str, key: Key) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    result = await charge(provider, customer, card, key("charge"), amount_cents=2_500)

    assert result.status is ChargeStatus.SUCCEEDED
    assert result.payment_intent_id is not None
    assert result.amount_cents == 2_500
    assert (result.decline_code, result.message) == (None, None)


@pytest.mark.parametrize(
    ("token", "status", "decline_code"),
    [
        ("pm_card_chargeDeclinedLostCard", ChargeStatus.HARD_DECLINE, "lost_card"),
        ("pm_card_chargeDeclinedStolenCard", ChargeStatus.HARD_DECLINE, "stolen_card"),
        ("pm_card_chargeDeclinedInsufficientFunds", ChargeStatus.SOFT_DECLINE, "insufficient_funds"),
        ("pm_card_chargeDeclined", ChargeStatus.SOFT_DECLINE, "generic_decline"),
    ],
)
async def test_a_declined_card_is_a_result_with_its_reason_not_an_exception(
    provider: PaymentProvider,
    customer: str,
    key: Key,
    token: str,
    status: ChargeStatus,
    decline_code: str,
) -> None:
    card = await attach(provider, customer, token, key)

    result = await charge(provider, customer, card, key("charge"))

    assert result.status is status
    assert result.decline_code == decline_code
    assert result.message
    # The declined PaymentIntent exists, so it can be retrieved and found later.
    assert result.payment_intent_id is not None
    assert (await provider.retrieve_payment_intent(result.payment_intent_id)).status is status


async def test_a_card_that_needs_authentication_requires_action(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_authenticationRequired", key)

    result = await charge(provider, customer, card, key("charge"))

    assert result.status is ChargeStatus.REQUIRES_ACTION
    assert result.payment_intent_id is not None
    assert result.message


async def test_a_charge_replayed_under_its_key_is_the_same_payment_intent(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    first = await charge(provider, customer, card, key("charge"))
    again = await charge(provider, customer, card, key("charge"))
    another = await charge(provider, customer, card, key("charge-2"))

    assert again == first
    assert another.payment_intent_id != first.payment_intent_id


async def test_a_declined_charge_replayed_under_its_key_is_the_same_decline(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_chargeDeclinedInsufficientFunds", key)

    first = await charge(provider, customer, card, key("charge"))
    again = await charge(provider, customer, card, key("charge"))

    assert again == first


async def test_a_charge_key_reused_with_another_amount_is_a_conflict(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    await charge(provider, customer, card, key("charge"), amount_cents=2_000)

    with pytest.raises(IdempotencyConflict):
        await charge(provider, customer, card, key("charge"), amount_cents=3_000)


@pytest.mark.parametrize("amount_cents", [0, -100, 12.5, True])
async def test_an_amount_that_is_not_positive_whole_cents_is_refused_before_sending(
    provider: PaymentProvider, customer: str, key: Key, amount_cents: int
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    with pytest.raises(ValueError):
        await charge(provider, customer, card, key("charge"), amount_cents=amount_cents)


async def test_a_charge_below_stripes_minimum(provider: PaymentProvider, customer: str, key: Key) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    if is_stripe(provider):
        # Stripe refuses a USD charge under $0.50 (amount_too_small); nothing is charged.
        with pytest.raises(PaymentProviderError) as caught:
            await charge(provider, customer, card, key("charge"), amount_cents=49)
        assert caught.value.code == "amount_too_small"
    else:
        # The sandbox has no minimum charge. The service never asks for less than the configured
        # recharge minimum, so nothing relies on the refusal.
        result = await charge(provider, customer, card, key("charge"), amount_cents=49)
        assert result.status is ChargeStatus.SUCCEEDED


async def test_a_charge_still_processing(
    provider: PaymentProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)

    if not is_stripe(provider):
        # The sandbox settles every charge at once: it has no PROCESSING state to offer.
        assert (await charge(provider, customer, card, key("charge"))).status is ChargeStatus.SUCCEEDED
        return
    fake.program_charge(ChargeOutcome.processing(), payment_method=card.payment_method_id)
    processing = await charge(provider, customer, card, key("charge"))
    assert processing.status is ChargeStatus.PROCESSING
    assert processing.payment_intent_id is not None
    fake.settle_payment_intent(processing.payment_intent_id, ChargeOutcome.succeeded())
    settled = await provider.retrieve_payment_intent(processing.payment_intent_id)
    assert settled.status is ChargeStatus.SUCCEEDED


# ---- looking charges up ------------------------------------------------------------------------------


async def test_retrieve_answers_what_the_charge_answered(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    charged = await charge(provider, customer, card, key("charge"))
    assert charged.payment_intent_id is not None

    assert await provider.retrieve_payment_intent(charged.payment_intent_id) == charged


async def test_a_payment_intent_waiting_for_authentication_is_canceled_for_good(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_authenticationRequired", key)
    waiting = await charge(provider, customer, card, key("charge"))
    assert waiting.status is ChargeStatus.REQUIRES_ACTION and waiting.payment_intent_id is not None

    canceled = await provider.cancel_payment_intent(waiting.payment_intent_id, key("cancel"))
    again = await provider.cancel_payment_intent(waiting.payment_intent_id, key("cancel"))

    # Final and unpaid, read as a hard decline: the same PaymentIntent, and the same answer again.
    assert (canceled.payment_intent_id, canceled.status) == (
        waiting.payment_intent_id,
        ChargeStatus.HARD_DECLINE,
    )
    assert again.status is ChargeStatus.HARD_DECLINE
    assert (
        await provider.retrieve_payment_intent(waiting.payment_intent_id)
    ).status is ChargeStatus.HARD_DECLINE


async def test_a_paid_payment_intent_is_not_canceled_and_its_state_is_the_answer(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    paid = await charge(provider, customer, card, key("charge"))
    assert paid.payment_intent_id is not None

    answer = await provider.cancel_payment_intent(paid.payment_intent_id, key("cancel"))

    assert (answer.payment_intent_id, answer.status) == (paid.payment_intent_id, ChargeStatus.SUCCEEDED)
    assert (await provider.retrieve_payment_intent(paid.payment_intent_id)).status is ChargeStatus.SUCCEEDED


async def test_cancel_of_an_unknown_payment_intent_is_refused(provider: PaymentProvider, key: Key) -> None:
    with pytest.raises(PaymentProviderError):
        await provider.cancel_payment_intent("pi_does_not_exist", key("cancel"))


async def test_retrieve_of_an_unknown_payment_intent_is_refused(provider: PaymentProvider) -> None:
    with pytest.raises(PaymentProviderError):
        await provider.retrieve_payment_intent("pi_does_not_exist")


async def test_find_by_metadata_returns_the_customers_matching_payment_intent(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    wanted = await charge(provider, customer, card, key("c1"), attempt="attempt-1")
    await charge(provider, customer, card, key("c2"), attempt="attempt-2")

    found = await provider.find_payment_intent(customer, METADATA_KEY, "attempt-1")

    assert found == wanted


async def test_find_by_metadata_is_none_for_no_match_or_another_customer(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    await charge(provider, customer, card, key("c1"), attempt="attempt-1")
    other = await provider.create_customer("company-2", key("other"))

    assert await provider.find_payment_intent(customer, METADATA_KEY, "attempt-9") is None
    assert await provider.find_payment_intent(other, METADATA_KEY, "attempt-1") is None


async def test_find_by_metadata_sees_a_decline_too(
    provider: PaymentProvider, customer: str, key: Key
) -> None:
    card = await attach(provider, customer, "pm_card_chargeDeclinedLostCard", key)
    declined = await charge(provider, customer, card, key("c1"))

    assert await provider.find_payment_intent(customer, METADATA_KEY, "attempt-1") == declined


# ---- webhooks ----------------------------------------------------------------------------------------


def signed_event(event: dict[str, object], secret: str = DEFAULT_WEBHOOK_SECRET) -> tuple[bytes, str]:
    payload = json.dumps(event).encode()
    return payload, FakeStripe.sign(payload, secret)


async def test_a_webhook_with_a_bad_signature_is_invalid(provider: PaymentProvider) -> None:
    payload, _ = signed_event({"id": "evt_1", "type": "payment_intent.succeeded"})
    _, wrong = signed_event({"id": "evt_1", "type": "payment_intent.succeeded"}, "whsec_wrong")

    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(payload, wrong)
    with pytest.raises(InvalidWebhook):
        provider.parse_webhook(payload, "")


async def test_a_signed_payment_intent_webhook(provider: PaymentProvider, customer: str, key: Key) -> None:
    card = await attach(provider, customer, "pm_card_visa", key)
    charged = await charge(provider, customer, card, key("charge"))
    intent = {
        "id": charged.payment_intent_id,
        "object": "payment_intent",
        "status": "succeeded",
        "amount": charged.amount_cents,
        "currency": "usd",
        "customer": customer,
        "last_payment_error": None,
        "metadata": {METADATA_KEY: "attempt-1"},
    }
    event = {"id": "evt_1", "type": "payment_intent.succeeded", "created": 1, "data": {"object": intent}}
    payload, signature = signed_event(event)

    if not is_stripe(provider):
        # The sandbox sends no webhooks, so it accepts none, however well signed: the service then
        # learns every outcome from the charge's own answer.
        with pytest.raises(InvalidWebhook):
            provider.parse_webhook(payload, signature)
        return
    parsed = provider.parse_webhook(payload, signature)
    assert (parsed.id, parsed.type) == ("evt_1", "payment_intent.succeeded")
    assert parsed.payment_intent_id == charged.payment_intent_id
    assert parsed.status is ChargeStatus.SUCCEEDED
    assert parsed.amount_cents == charged.amount_cents
    assert parsed.metadata == {METADATA_KEY: "attempt-1"}
