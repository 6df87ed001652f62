"""Transient failures: what the caller sees, and that retrying with the same key never charges twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service.payments.provider import CardDetails, ChargeStatus, OutcomeUnknown
from service.payments.stripe_provider import StripeProvider
from tests.support.fake_stripe import FakeStripe

Key = Callable[[str], str]
MakeProvider = Callable[..., StripeProvider]
CHARGE_PATH = "/v1/payment_intents"


def charge_posts(fake: FakeStripe) -> list[tuple[str | None, int | None, bool]]:
    return [(r.idempotency_key, r.status, r.replayed) for r in fake.posts() if r.path == CHARGE_PATH]


@pytest.mark.parametrize(
    ("status", "should_retry"),
    [(500, True), (500, None), (503, None), (409, None), (429, None), (429, True)],
)
async def test_transient_http_errors_are_outcome_unknown_and_a_same_key_retry_charges_once(
    provider: StripeProvider,
    fake: FakeStripe,
    customer: str,
    visa: CardDetails,
    key: Key,
    status: int,
    should_retry: bool | None,
) -> None:
    fake.fail_requests(status, path=CHARGE_PATH, should_retry=should_retry)

    with pytest.raises(OutcomeUnknown):
        await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")
    assert fake.payment_intents_for(customer) == []

    result = await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert result.status is ChargeStatus.SUCCEEDED
    assert len(fake.payment_intents_for(customer)) == 1


async def test_connection_dropped_after_commit_is_unknown_and_the_retry_finds_the_same_charge(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    fake.drop_connection(after_commit=True, path=CHARGE_PATH)

    with pytest.raises(OutcomeUnknown):
        await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {"a": "1"}, "d")
    [committed] = fake.payment_intents_for(customer)
    assert committed["status"] == "succeeded"  # the money moved although we never heard back

    result = await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {"a": "1"}, "d")

    assert (result.payment_intent_id, result.status) == (committed["id"], ChargeStatus.SUCCEEDED)
    assert len(fake.payment_intents_for(customer)) == 1
    assert charge_posts(fake) == [(key("charge"), None, False), (key("charge"), 200, True)]


async def test_connection_dropped_before_commit_is_unknown_and_the_retry_charges_once(
    provider: StripeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    fake.drop_connection(after_commit=False, path=CHARGE_PATH)

    with pytest.raises(OutcomeUnknown):
        await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")
    assert fake.payment_intents_for(customer) == []

    result = await provider.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert result.status is ChargeStatus.SUCCEEDED
    assert len(fake.payment_intents_for(customer)) == 1


async def test_a_response_slower_than_the_timeout_is_unknown_and_the_retry_finds_the_charge(
    make_provider: MakeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    impatient = make_provider(timeout_s=0.3)
    fake.delay_responses(2.0, path=CHARGE_PATH)

    with pytest.raises(OutcomeUnknown):
        await impatient.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    result = await impatient.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    [stored] = fake.payment_intents_for(customer)
    assert result.payment_intent_id == stored["id"]


async def test_the_library_retries_a_should_retry_500_with_the_same_key(
    make_provider: MakeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    retrying = make_provider(max_network_retries=2)
    fake.fail_requests(500, path=CHARGE_PATH, should_retry=True)

    result = await retrying.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert result.status is ChargeStatus.SUCCEEDED
    assert charge_posts(fake) == [(key("charge"), 500, False), (key("charge"), 200, False)]
    assert len(fake.payment_intents_for(customer)) == 1


async def test_the_library_retry_after_a_lost_response_gets_the_replay_not_a_second_charge(
    make_provider: MakeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    retrying = make_provider(max_network_retries=2)
    fake.drop_connection(after_commit=True, path=CHARGE_PATH)

    result = await retrying.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert result.status is ChargeStatus.SUCCEEDED
    assert charge_posts(fake) == [(key("charge"), None, False), (key("charge"), 200, True)]
    assert len(fake.payment_intents_for(customer)) == 1


async def test_a_500_stripe_says_not_to_retry_is_not_retried_and_is_unknown(
    make_provider: MakeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    retrying = make_provider(max_network_retries=2)
    fake.fail_requests(500, path=CHARGE_PATH, should_retry=False)

    with pytest.raises(OutcomeUnknown):
        await retrying.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert charge_posts(fake) == [(key("charge"), 500, False)]


async def test_the_library_gives_up_after_its_retries_and_we_say_unknown(
    make_provider: MakeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    retrying = make_provider(max_network_retries=1)
    fake.fail_requests(503, path=CHARGE_PATH, times=None)

    with pytest.raises(OutcomeUnknown):
        await retrying.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")

    assert charge_posts(fake) == [(key("charge"), 503, False)] * 2


async def test_a_same_key_request_while_the_first_is_in_flight_is_unknown_not_a_second_charge(
    make_provider: MakeProvider, fake: FakeStripe, customer: str, visa: CardDetails, key: Key
) -> None:
    slow = make_provider(timeout_s=5.0)
    fake.delay_responses(0.5, path=CHARGE_PATH)

    first = asyncio.create_task(slow.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d"))
    try:
        await asyncio.sleep(0.1)  # the first request has taken effect and is being "slow"
        with pytest.raises(OutcomeUnknown):
            await slow.charge(customer, visa.payment_method_id, 2_000, key("charge"), {}, "d")
    finally:
        # Never leave the task pending past the test, even when an assertion above failed.
        first_result = await first

    assert first_result.status is ChargeStatus.SUCCEEDED
    assert len(fake.payment_intents_for(customer)) == 1
    assert [status for _, status, _ in charge_posts(fake)] == [200, 409]  # in order of arrival


async def test_faults_on_setup_calls_are_unknown_too(
    provider: StripeProvider, fake: FakeStripe, customer: str, key: Key
) -> None:
    fake.fail_requests(500, path="/v1/payment_methods/*/attach")

    with pytest.raises(OutcomeUnknown):
        await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))

    card = await provider.attach_payment_method(customer, "pm_card_visa", key("attach"))
    assert fake.customers[customer]["invoice_settings"]["default_payment_method"] == card.payment_method_id
