"""StripeProvider through the real stripe library, over HTTP, against the fake Stripe server."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from service.payments.provider import (
    CardDetails,
    ChargeResult,
    ChargeStatus,
    IdempotencyConflict,
    OutcomeUnknown,
    PaymentMethodRejected,
    PaymentProvider,
    PaymentProviderError,
)
from service.payments.stripe_provider import STRIPE_API_VERSION, StripeProvider
from tests.support.fake_stripe import ChargeOutcome, FakeStripe

Key = Callable[[str], str]


async def charge(
    provider: StripeProvider, customer: str, card: CardDetails, key: str, amount_cents: int = 2_000
) -> ChargeResult:
    return await provider.charge(
        customer, card.payment_method_id, amount_cents, key, {"attempt_id": key}, "Wallet recharge"
    )


def test_stripe_provider_satisfies_the_protocol(provider: StripeProvider) -> None:
    assert isinstance(provider, PaymentProvider)


async def test_create_customer_sends_callers_key_and_pinned_api_version(
    provider: StripeProvider, fake: FakeStripe, key: Key
) -> None:
    customer_id = await provider.create_customer("company-42", key("c"))

    assert fake.customers[customer_id]["metadata"] == {"company_id": "company-42"}
    [post] = fake.posts()
    assert (post.path, post.idempotency_key) == ("/v1/customers", key("c"))
    assert post.stripe_version == STRIPE_API_VERSION


async def test_create_customer_twice_with_one_key_makes_one_customer(
    provider: StripeProvider, fake: FakeStripe, key: Key
) -> None:
    first = await provider.create_customer("company-42", key("c"))
    second = await provider.create_customer("company-42", key("c"))

    assert first == second
    assert len(fake.customers) == 1
    assert [r.replayed for r in fake.posts()] == [False, True]


async def test_setup_intent_is_for_off_session_use_and_hides_its_secret(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    intent = await provider.create_setup_intent(customer, key("si"))

    stored = fake.setup_intents[intent.setup_intent_id]
    assert stored["usage"] == "off_session"
    assert stored["customer"] == customer
    assert intent.client_secret == stored["client_secret"]
    assert intent.client_secret not in repr(intent)


async def test_attach_returns_card_details_and_makes_the_card_the_default(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    card = await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))

    # As in Stripe's test mode, the token became a new payment method: that id is the one to keep.
    assert card.payment_method_id != "pm_card_visa"
    assert card.payment_method_id in fake.payment_methods
    assert (card.brand, card.last4, card.exp_month) == ("visa", "4242", 12)
    assert card.exp_year > 2000 and card.fingerprint
    assert fake.payment_methods[card.payment_method_id]["customer"] == customer
    assert fake.customers[customer]["invoice_settings"]["default_payment_method"] == card.payment_method_id
    attach_post, default_post = fake.posts()[-2:]
    assert attach_post.path == "/v1/payment_methods/pm_card_visa/attach"
    assert default_post.path == f"/v1/customers/{customer}"
    assert attach_post.idempotency_key == f"{key('attach')}:attach"
    assert default_post.idempotency_key == f"{key('attach')}:set-default"


async def test_attach_retried_with_the_same_key_keeps_one_payment_method(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    first = await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))
    second = await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))

    assert first == second
    assert len(fake.payment_methods) == 1


async def test_attach_of_an_unknown_payment_method_is_rejected(
    provider: StripeProvider, customer: str, key: Key
) -> None:
    with pytest.raises(PaymentMethodRejected) as caught:
        await provider.attach_payment_method(customer, "pm_does_not_exist", key("attach"))

    assert "No such PaymentMethod" in caught.value.reason
    assert caught.value.code == "resource_missing"


async def test_attach_of_a_declined_card_is_rejected_with_stripes_message(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    fake.reject_attach("pm_card_visa", decline_code="do_not_honor", message="Your card was declined.")

    with pytest.raises(PaymentMethodRejected) as caught:
        await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))

    assert caught.value.reason == "Your card was declined."
    assert (caught.value.code, caught.value.decline_code) == ("card_declined", "do_not_honor")
    assert fake.customers[customer]["invoice_settings"]["default_payment_method"] is None


async def test_attach_to_an_unknown_customer_is_not_blamed_on_the_card(
    provider: StripeProvider, key: Key
) -> None:
    with pytest.raises(PaymentProviderError) as caught:
        await provider.attach_payment_method("cus_missing", "pm_card_visa", key("attach"))

    assert not isinstance(caught.value, PaymentMethodRejected)


async def test_detach_removes_the_card_and_the_default(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    await provider.detach_payment_method(visa.payment_method_id, key("detach"))

    assert fake.payment_methods[visa.payment_method_id]["customer"] is None
    assert fake.customers[customer]["invoice_settings"]["default_payment_method"] is None
    assert fake.posts()[-1].idempotency_key == key("detach")
    # A second detach under a new key is refused outright, not "unknown".
    with pytest.raises(PaymentProviderError) as caught:
        await provider.detach_payment_method(visa.payment_method_id, key("detach-again"))
    assert not isinstance(caught.value, OutcomeUnknown)


async def test_charge_succeeds_off_session_in_usd(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    result = await provider.charge(
        customer, visa.payment_method_id, 2_500, key("charge"), {"attempt_id": "a-1"}, "Wallet recharge"
    )

    assert result.status is ChargeStatus.SUCCEEDED
    assert result.amount_cents == 2_500
    assert (result.decline_code, result.message) == (None, None)
    stored = fake.payment_intents[result.payment_intent_id or ""]
    assert stored["status"] == "succeeded"
    assert (stored["amount"], stored["currency"], stored["customer"]) == (2_500, "usd", customer)
    assert stored["metadata"] == {"attempt_id": "a-1"}
    [post] = [r for r in fake.posts() if r.path == "/v1/payment_intents"]
    assert post.params["confirm"] == "true" and post.params["off_session"] == "true"
    assert post.params["description"] == "Wallet recharge"
    assert post.idempotency_key == key("charge")


@pytest.mark.parametrize("amount_cents", [0, -100, 12.5, True])
async def test_charge_refuses_a_bad_amount_before_calling_stripe(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key, amount_cents: int
) -> None:
    before = len(fake.requests)
    with pytest.raises(ValueError):
        await provider.charge(customer, visa.payment_method_id, amount_cents, key("x"), {}, "d")
    assert len(fake.requests) == before


async def test_charge_requires_an_idempotency_key(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails
) -> None:
    with pytest.raises(ValueError):
        await provider.charge(customer, visa.payment_method_id, 1_000, "", {}, "d")
    assert fake.payment_intents == {}


async def test_charge_twice_with_one_key_creates_one_payment_intent(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    first = await charge(provider, customer, visa, key("charge"))
    second = await charge(provider, customer, visa, key("charge"))

    assert first == second
    assert len(fake.payment_intents_for(customer)) == 1
    assert fake.posts()[-1].replayed


async def test_same_key_with_other_parameters_surfaces_an_idempotency_conflict(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    await charge(provider, customer, visa, key("charge"), amount_cents=2_000)

    with pytest.raises(IdempotencyConflict):
        await charge(provider, customer, visa, key("charge"), amount_cents=3_000)
    assert len(fake.payment_intents_for(customer)) == 1


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (ChargeOutcome.declined("insufficient_funds"), ChargeStatus.SOFT_DECLINE),
        (ChargeOutcome.declined("generic_decline"), ChargeStatus.SOFT_DECLINE),
        (ChargeOutcome.declined("card_velocity_exceeded"), ChargeStatus.SOFT_DECLINE),
        (ChargeOutcome.declined("try_again_later"), ChargeStatus.SOFT_DECLINE),
        (ChargeOutcome.declined("do_not_honor"), ChargeStatus.SOFT_DECLINE),
        (ChargeOutcome.declined("lost_card"), ChargeStatus.HARD_DECLINE),
        (ChargeOutcome.declined("stolen_card"), ChargeStatus.HARD_DECLINE),
        (ChargeOutcome.declined("incorrect_number", code="incorrect_number"), ChargeStatus.HARD_DECLINE),
        (ChargeOutcome.declined("expired_card", code="expired_card"), ChargeStatus.HARD_DECLINE),
        (ChargeOutcome.declined("do_not_honor", advice_code="do_not_try_again"), ChargeStatus.HARD_DECLINE),
        (
            ChargeOutcome.declined("generic_decline", advice_code="confirm_card_data"),
            ChargeStatus.HARD_DECLINE,
        ),
        (
            ChargeOutcome.declined("generic_decline", advice_code="try_again_later"),
            ChargeStatus.SOFT_DECLINE,
        ),
    ],
    ids=lambda v: getattr(v, "decline_code", None) and f"{v.decline_code}/{v.advice_code}",
)
async def test_declines_are_results_classified_hard_or_soft(
    provider: StripeProvider,
    fake: FakeStripe,
    customer: str,
    visa: CardDetails,
    key: Key,
    outcome: ChargeOutcome,
    expected: ChargeStatus,
) -> None:
    fake.program_charge(outcome)

    result = await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert result.status is expected
    assert result.decline_code == outcome.decline_code
    assert result.message == outcome.message
    [stored] = fake.payment_intents_for(customer)
    assert result.payment_intent_id == stored["id"]
    assert stored["status"] == "requires_payment_method"
    # A replay of a decline is the same decline, not a second attempt on the card.
    assert await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d") == result
    assert len(fake.payment_intents_for(customer)) == 1


@pytest.mark.parametrize(
    ("token", "status", "decline_code"),
    [
        ("pm_card_visa", ChargeStatus.SUCCEEDED, None),
        ("pm_card_chargeDeclined", ChargeStatus.SOFT_DECLINE, "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", ChargeStatus.SOFT_DECLINE, "insufficient_funds"),
        ("pm_card_chargeDeclinedLostCard", ChargeStatus.HARD_DECLINE, "lost_card"),
        ("pm_card_chargeDeclinedExpiredCard", ChargeStatus.HARD_DECLINE, "expired_card"),
        ("pm_card_authenticationRequired", ChargeStatus.REQUIRES_ACTION, "authentication_required"),
    ],
)
async def test_stripe_test_cards_charge_as_documented(
    provider: StripeProvider,
    customer: str,
    key: Key,
    token: str,
    status: ChargeStatus,
    decline_code: str | None,
) -> None:
    card = await provider.attach_payment_method(customer, token, key("attach"))

    result = await charge(provider, customer, card, key("charge"))

    assert (result.status, result.decline_code) == (status, decline_code)


async def test_authentication_required_is_requires_action_with_the_payment_intent(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    card = await provider.attach_payment_method(customer, "pm_card_authenticationRequired", key("attach"))

    result = await provider.charge(customer, card.payment_method_id, 2_000, key("charge"), {}, "d")

    assert result.status is ChargeStatus.REQUIRES_ACTION
    assert fake.payment_intents[result.payment_intent_id or ""]["status"] == "requires_action"


async def test_processing_charge_settles_later_and_retrieve_sees_it(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    fake.program_charge(ChargeOutcome.processing())

    result = await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")
    assert result.status is ChargeStatus.PROCESSING
    assert result.payment_intent_id is not None
    pending = await provider.retrieve_payment_intent(result.payment_intent_id)
    assert pending.status is ChargeStatus.PROCESSING

    fake.settle_payment_intent(result.payment_intent_id, ChargeOutcome.declined("insufficient_funds"))
    settled = await provider.retrieve_payment_intent(result.payment_intent_id)

    assert (settled.status, settled.decline_code) == (ChargeStatus.SOFT_DECLINE, "insufficient_funds")


async def test_retrieve_of_an_unknown_payment_intent_is_refused_not_unknown(provider: StripeProvider) -> None:
    with pytest.raises(PaymentProviderError) as caught:
        await provider.retrieve_payment_intent("pi_missing")

    assert not isinstance(caught.value, OutcomeUnknown)
    assert caught.value.code == "resource_missing"


async def test_find_payment_intent_by_metadata_within_the_customer(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    other = await provider.create_customer("company-2", key("other"))
    other_card = await provider.attach_payment_method(other, "pm_card_visa", key("other-attach"))
    fake.program_charge(ChargeOutcome.declined("insufficient_funds"), customer=customer)
    wanted = await provider.charge(customer, visa.payment_method_id, 1_000, key("a"), {"attempt": "a"}, "d")
    await provider.charge(customer, visa.payment_method_id, 1_000, key("b"), {"attempt": "b"}, "d")
    await provider.charge(other, other_card.payment_method_id, 1_000, key("o"), {"attempt": "a"}, "d")

    found = await provider.find_payment_intent(customer, "attempt", "a")

    assert found == wanted
    assert found is not None and found.status is ChargeStatus.SOFT_DECLINE
    assert await provider.find_payment_intent(customer, "attempt", "zzz") is None
    assert await provider.find_payment_intent(customer, "other_key", "a") is None


async def test_find_payment_intent_pages_through_older_attempts(
    provider: StripeProvider, customer: str, visa: CardDetails, key: Key
) -> None:
    oldest = await provider.charge(customer, visa.payment_method_id, 1_000, key("0"), {"attempt": "0"}, "d")
    for i in range(1, 101):  # one more than a page of 100
        await provider.charge(customer, visa.payment_method_id, 1_000, key(str(i)), {"attempt": str(i)}, "d")

    assert await provider.find_payment_intent(customer, "attempt", "0") == oldest


async def test_every_post_carries_a_key_chosen_by_the_caller(
    provider: StripeProvider, fake: FakeStripe, key: Key
) -> None:
    chosen = [key(name) for name in ("customer", "setup", "attach", "charge", "detach")]
    customer = await provider.create_customer("company-1", chosen[0])
    await provider.create_setup_intent(customer, chosen[1])
    card = await provider.attach_payment_method(customer, "pm_card_visa", chosen[2])
    await provider.charge(customer, card.payment_method_id, 1_000, chosen[3], {}, "d")
    await provider.detach_payment_method(card.payment_method_id, chosen[4])

    posts = fake.posts()
    assert len(posts) == 6  # attach is two POSTs
    for post in posts:
        assert post.idempotency_key is not None, post.path
        assert any(post.idempotency_key in (k, f"{k}:attach", f"{k}:set-default") for k in chosen), post


async def test_secrets_stay_out_of_results_errors_and_debug_logs(
    provider: StripeProvider,
    fake: FakeStripe,
    customer: str,
    key: Key,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    intent = await provider.create_setup_intent(customer, key("si"))
    card = await provider.attach_payment_method(customer, "pm_card_chargeDeclinedLostCard", key("attach"))
    declined = await provider.charge(customer, card.payment_method_id, 1_000, key("charge"), {}, "d")
    pi_secret = fake.payment_intents[declined.payment_intent_id or ""]["client_secret"]

    assert intent.client_secret not in caplog.text
    assert pi_secret not in caplog.text
    assert pi_secret not in repr(declined)
    fake.fail_requests(500)
    with pytest.raises(OutcomeUnknown) as caught:
        await provider.charge(customer, card.payment_method_id, 1_000, key("charge-2"), {}, "d")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_wrong_api_key_is_refused_without_echoing_the_key(fake: FakeStripe) -> None:
    secret_key = "sk_test_definitely_wrong_9876"
    provider = StripeProvider(
        api_key=secret_key, api_base=fake.url, webhook_secret="whsec_x", max_network_retries=0
    )
    try:
        with pytest.raises(PaymentProviderError) as caught:
            await provider.create_customer("company-1", "k1")
    finally:
        await provider.aclose()

    assert not isinstance(caught.value, OutcomeUnknown)
    assert "9876" not in str(caught.value)
    assert secret_key not in repr(provider)
