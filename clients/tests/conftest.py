"""Fixtures: a fake billing server on port 0 and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from consofta.billing.client import AsyncBillingClient, BillingClient, RetryPolicy
from fake_billing import FakeBilling, new_fake_billing, serving


def fast_retry(max_attempts: int = 4) -> RetryPolicy:
    # Tiny backoffs keep the tests quick; the backoff arithmetic has its own test.
    return RetryPolicy(max_attempts=max_attempts, initial_backoff_s=0.001, max_backoff_s=0.005)


@pytest.fixture
def fake() -> FakeBilling:
    return new_fake_billing(balances_nanos={"acme": 0})


@pytest.fixture
def target(fake: FakeBilling) -> Iterator[str]:
    with serving(fake) as address:
        yield address


@pytest.fixture
async def client(target: str) -> AsyncIterator[AsyncBillingClient]:
    async with AsyncBillingClient(target, bearer_token="tok-123", retry=fast_retry()) as opened:
        yield opened


@pytest.fixture
def sync_client(target: str) -> Iterator[BillingClient]:
    with BillingClient(target, bearer_token="tok-123", retry=fast_retry()) as opened:
        yield opened
