"""The client library's end-to-end tests run against both of its clients.

`billing` and `client_class` here are parametrized: once AsyncBillingClient, once the blocking BillingClient
driven from worker threads over its own real channel, while the real server runs on the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, cast

import pytest
from consofta.billing.client import AsyncBillingClient, BillingClient

from service.server import BillingServer


class ThreadedBillingClient:
    """A BillingClient behind AsyncBillingClient's interface, so that one test exercises both: each method
    that is a coroutine on AsyncBillingClient runs the blocking method in a worker thread (blocking the
    event loop would stall the server under test); everything else is the blocking client's own.

    clients/tests/conftest.py has the same adapter: the client's own tests run from an installation of
    the client alone, where nothing of this repository's tests/ can be imported."""

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


# BillingClient is generated from AsyncBillingClient: the same constructor and methods, only blocking.
CLIENT_CLASSES: dict[str, type[AsyncBillingClient]] = {
    "async": AsyncBillingClient,
    "sync": cast(type[AsyncBillingClient], ThreadedBillingClient),
}


@pytest.fixture(params=sorted(CLIENT_CLASSES))
def client_class(request: pytest.FixtureRequest) -> type[AsyncBillingClient]:
    return CLIENT_CLASSES[request.param]


@pytest.fixture
async def billing(
    client_class: type[AsyncBillingClient], app: BillingServer
) -> AsyncIterator[AsyncBillingClient]:
    """The client library (clients/), as other services call us."""
    async with client_class(f"127.0.0.1:{app.port}") as client:
        yield client
