"""Fixtures: a fake billing server on port 0, and clients pointed at it.

Every test that takes `client` or `client_class` runs twice: against AsyncBillingClient, and against the
blocking BillingClient driven from worker threads over its own real channel (`ThreadedBillingClient`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, cast

import pytest
from consofta.billing.client import AsyncBillingClient, BillingClient, RetryPolicy
from fake_billing import FakeBilling, new_fake_billing, serving


def fast_retry(max_attempts: int = 4) -> RetryPolicy:
    # Tiny backoffs keep the tests quick; the backoff arithmetic has its own test.
    return RetryPolicy(max_attempts=max_attempts, initial_backoff_s=0.001, max_backoff_s=0.005)


class ThreadedBillingClient:
    """A BillingClient behind AsyncBillingClient's interface, so that one test exercises both: each method
    that is a coroutine on AsyncBillingClient runs the blocking method in a worker thread (blocking the
    event loop would stall the servers the tests run on it); everything else is the blocking client's own
    (its raw stubs, its channel, `metadata()`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.blocking = BillingClient(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.blocking, name)
        if not inspect.iscoroutinefunction(getattr(AsyncBillingClient, name, None)):
            return attribute

        async def in_a_thread(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attribute, *args, **kwargs)

        return in_a_thread

    async def __aenter__(self) -> ThreadedBillingClient:
        await asyncio.to_thread(self.blocking.__enter__)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.blocking.__exit__, kind, error, tb)


# BillingClient is generated from AsyncBillingClient, so it has the same constructor and methods, only
# blocking; the tests are type-checked against the async interface that both share.
CLIENT_CLASSES: dict[str, type[AsyncBillingClient]] = {
    "async": AsyncBillingClient,
    "sync": cast(type[AsyncBillingClient], ThreadedBillingClient),
}


@pytest.fixture(params=sorted(CLIENT_CLASSES))
def client_class(request: pytest.FixtureRequest) -> type[AsyncBillingClient]:
    return CLIENT_CLASSES[request.param]


@pytest.fixture
def fake() -> FakeBilling:
    return new_fake_billing(balances_nanos={"acme": 0})


@pytest.fixture
def target(fake: FakeBilling) -> Iterator[str]:
    with serving(fake) as address:
        yield address


@pytest.fixture
async def client(client_class: type[AsyncBillingClient], target: str) -> AsyncIterator[AsyncBillingClient]:
    async with client_class(
        target, bearer_token="tok-123", retry=fast_retry(), allow_insecure_token=True
    ) as opened:
        yield opened
