"""Fixtures for the payment tests: a fresh fake Stripe per test and the real provider pointed at it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from service.payments.provider import CardDetails
from service.payments.stripe_provider import StripeProvider
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, FakeStripe

WEBHOOK_SECRET = DEFAULT_WEBHOOK_SECRET


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe() as server:
        yield server


@pytest.fixture
async def make_provider(fake: FakeStripe) -> AsyncIterator[Callable[..., StripeProvider]]:
    """StripeProvider on the fake; max_network_retries=0 unless a test is about the library's retry."""
    made: list[StripeProvider] = []

    def make(*, max_network_retries: int = 0, timeout_s: float = 5.0) -> StripeProvider:
        provider = StripeProvider(
            api_key=fake.api_key,
            api_base=fake.url,
            webhook_secret=WEBHOOK_SECRET,
            timeout_s=timeout_s,
            max_network_retries=max_network_retries,
        )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
async def provider(fake: FakeStripe) -> AsyncIterator[StripeProvider]:
    p = StripeProvider(
        api_key=fake.api_key,
        api_base=fake.url,
        webhook_secret=WEBHOOK_SECRET,
        timeout_s=5.0,
        max_network_retries=0,
    )
    yield p
    await p.aclose()


@pytest.fixture
def key() -> Callable[[str], str]:
    """Idempotency keys as the service would choose them: unique per logical operation."""
    run = uuid.uuid4().hex[:8]
    return lambda name: f"test-{run}-{name}"


@pytest.fixture
async def customer(provider: StripeProvider, key: Callable[[str], str]) -> str:
    return await provider.create_customer("company-1", key("customer"))


@pytest.fixture
async def visa(provider: StripeProvider, customer: str, key: Callable[[str], str]) -> CardDetails:
    return await provider.attach_payment_method(customer, "pm_card_visa", key("attach-visa"))
