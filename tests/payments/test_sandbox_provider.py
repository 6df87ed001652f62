"""The no-network sandbox provider, and that it declines like Stripe (on the fake) for the same cards."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.payments.provider import (
    ChargeStatus,
    IdempotencyConflict,
    InvalidWebhook,
    PaymentMethodRejected,
    PaymentProvider,
    PaymentProviderError,
)
from service.payments.sandbox_provider import TEST_CARDS, SandboxProvider
from service.payments.stripe_provider import StripeProvider

Key = Callable[[str], str]


@pytest.fixture
def sandbox() -> SandboxProvider:
    return SandboxProvider()


async def new_card(sandbox: SandboxProvider, token: str = "pm_card_visa") -> tuple[str, str]:
    customer = await sandbox.create_customer("company-1", f"customer-{token}")
    card = await sandbox.attach_payment_method(customer, token, f"attach-{token}")
    return customer, card.payment_method_id


def test_sandbox_satisfies_the_protocol(sandbox: SandboxProvider) -> None:
    assert isinstance(sandbox, PaymentProvider)


async def test_customer_and_setup_intent(sandbox: SandboxProvider) -> None:
    customer = await sandbox.create_customer("company-1", "k-customer")
    assert await sandbox.create_customer("company-1", "k-customer") == customer
    assert await sandbox.create_customer("company-1", "k-customer-2") != customer

    intent = await sandbox.create_setup_intent(customer, "k-si")

    assert intent.client_secret and intent.client_secret not in repr(intent)
    with pytest.raises(PaymentProviderError):
        await sandbox.create_setup_intent("cus_nobody", "k-si-2")


async def test_attach_materializes_a_new_card_id_and_rejects_unknown_ones(sandbox: SandboxProvider) -> None:
    customer = await sandbox.create_customer("company-1", "k-customer")

    card = await sandbox.attach_payment_method(customer, "pm_card_mastercard", "k-attach")

    assert card.payment_method_id.startswith("pm_") and card.payment_method_id != "pm_card_mastercard"
    assert (card.brand, card.last4) == ("mastercard", "4444")
    assert await sandbox.attach_payment_method(customer, "pm_card_mastercard", "k-attach") == card
    with pytest.raises(PaymentMethodRejected) as caught:
        await sandbox.attach_payment_method(customer, "pm_made_up", "k-attach-2")
    assert caught.value.code == "resource_missing"


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
async def test_test_cards_charge_as_in_stripe_test_mode(
    sandbox: SandboxProvider, token: str, status: ChargeStatus, decline_code: str | None
) -> None:
    customer, pm = await new_card(sandbox, token)

    result = await sandbox.charge(customer, pm, 1_500, "k-charge", {"attempt_id": "a1"}, "d")

    assert (result.status, result.decline_code, result.amount_cents) == (status, decline_code, 1_500)
    assert result.payment_intent_id is not None
    assert await sandbox.retrieve_payment_intent(result.payment_intent_id) == result


async def test_same_key_same_charge_and_different_parameters_conflict(sandbox: SandboxProvider) -> None:
    customer, pm = await new_card(sandbox)

    first = await sandbox.charge(customer, pm, 1_500, "k-charge", {"attempt_id": "a1"}, "d")
    again = await sandbox.charge(customer, pm, 1_500, "k-charge", {"attempt_id": "a1"}, "d")
    other = await sandbox.charge(customer, pm, 1_500, "k-charge-2", {"attempt_id": "a2"}, "d")

    assert again == first
    assert other.payment_intent_id != first.payment_intent_id
    with pytest.raises(IdempotencyConflict):
        await sandbox.charge(customer, pm, 9_900, "k-charge", {"attempt_id": "a1"}, "d")


async def test_a_refused_request_is_replayed_as_refused(sandbox: SandboxProvider) -> None:
    customer = await sandbox.create_customer("company-1", "k-customer")
    for _ in range(2):
        with pytest.raises(PaymentMethodRejected):
            await sandbox.attach_payment_method(customer, "pm_unknown", "k-attach")


async def test_detach_then_charging_the_card_is_refused(sandbox: SandboxProvider) -> None:
    customer, pm = await new_card(sandbox)

    await sandbox.detach_payment_method(pm, "k-detach")

    with pytest.raises(PaymentProviderError):
        await sandbox.charge(customer, pm, 1_500, "k-charge", {}, "d")
    with pytest.raises(PaymentProviderError):
        await sandbox.detach_payment_method(pm, "k-detach-2")


async def test_find_payment_intent_newest_first_within_the_customer(sandbox: SandboxProvider) -> None:
    customer, pm = await new_card(sandbox)
    other_customer, other_pm = await new_card(sandbox, "pm_card_amex")
    await sandbox.charge(other_customer, other_pm, 1_000, "k-other", {"attempt_id": "a1"}, "d")
    first = await sandbox.charge(customer, pm, 1_000, "k-1", {"attempt_id": "a1"}, "d")
    await sandbox.charge(customer, pm, 1_000, "k-2", {"attempt_id": "a2"}, "d")

    assert await sandbox.find_payment_intent(customer, "attempt_id", "a1") == first
    assert await sandbox.find_payment_intent(customer, "attempt_id", "nope") is None


@pytest.mark.parametrize("amount_cents", [0, -1, 2.5, True])
async def test_bad_amounts_are_refused(sandbox: SandboxProvider, amount_cents: int) -> None:
    customer, pm = await new_card(sandbox)
    with pytest.raises(ValueError):
        await sandbox.charge(customer, pm, amount_cents, "k", {}, "d")


async def test_missing_idempotency_key_is_refused(sandbox: SandboxProvider) -> None:
    with pytest.raises(ValueError):
        await sandbox.create_customer("company-1", "")


def test_the_sandbox_accepts_no_webhooks(sandbox: SandboxProvider) -> None:
    with pytest.raises(InvalidWebhook):
        sandbox.parse_webhook(b"{}", "t=1,v1=00")


@pytest.mark.parametrize("token", sorted(TEST_CARDS))
async def test_sandbox_and_stripe_agree_on_every_sandbox_test_card(
    sandbox: SandboxProvider, provider: StripeProvider, key: Key, token: str
) -> None:
    """The sandbox must not teach newcomers behaviour Stripe does not have."""
    customer, pm = await new_card(sandbox, token)
    expected = await sandbox.charge(customer, pm, 1_000, "k", {}, "d")

    stripe_customer = await provider.create_customer("company-1", key("c"))
    stripe_card = await provider.attach_payment_method(stripe_customer, token, key("a"))
    actual = await provider.charge(stripe_customer, stripe_card.payment_method_id, 1_000, key("k"), {}, "d")

    assert (actual.status, actual.decline_code) == (expected.status, expected.decline_code)
