"""Fixtures for the settings tests: the SettingsService stub on the shared (sandbox) server, and a
server whose payment provider is the real Stripe provider pointed at the fake Stripe server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import structlog
from consofta.billing.v1 import settings_service_pb2_grpc, wallet_service_pb2, wallet_service_pb2_grpc

from service.server import BillingServer, start_server
from tests.conftest import Stubs
from tests.support.config import server_config
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, FakeStripe


@pytest.fixture
def settings(stubs: Stubs) -> settings_service_pb2_grpc.SettingsServiceAsyncStub:
    return settings_service_pb2_grpc.SettingsServiceStub(stubs.channel)


@dataclass
class StripeWorld:
    """A billing server on the Stripe provider, the fake Stripe it talks to, and stubs for both."""

    app: BillingServer
    fake: FakeStripe
    settings: settings_service_pb2_grpc.SettingsServiceAsyncStub
    wallet: wallet_service_pb2_grpc.WalletServiceAsyncStub

    async def new_company(self, company_id: str) -> str:
        await self.wallet.CreateWallet(
            wallet_service_pb2.CreateWalletRequest(
                company_id=company_id, display_name=company_id, request_id=f"create-{company_id}"
            )
        )
        return company_id


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    async with FakeStripe() as fake:
        yield fake


@pytest.fixture
async def stripe_world(db_url: str, fake_stripe: FakeStripe) -> AsyncIterator[StripeWorld]:
    config = server_config(
        health_probe_interval_s=0.2,
        payment_provider="stripe",
        stripe_secret_key=fake_stripe.api_key,
        stripe_webhook_secret=DEFAULT_WEBHOOK_SECRET,
        stripe_api_base=fake_stripe.url,
    )
    app = await start_server(config, database_url=db_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield StripeWorld(
                app,
                fake_stripe,
                settings_service_pb2_grpc.SettingsServiceStub(channel),
                wallet_service_pb2_grpc.WalletServiceStub(channel),
            )
    finally:
        await app.stop(grace_s=1)


@contextmanager
def every_log_line() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog.testing.capture_logs() at DEBUG: the suite logs at WARNING, and a leak in an INFO line
    must not hide behind that filter."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)
