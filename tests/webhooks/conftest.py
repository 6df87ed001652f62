"""Outbound webhooks against a real server, real Postgres and a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from consofta.billing.v1 import (
    wallet_service_pb2,
    wallet_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)

from service.api.wire.money import money
from service.domain.webhook_hosts import parse_allowed_hosts
from service.server import BillingServer, start_server
from tests.support.config import server_config
from tests.support.webhook_receiver import Receiver

# Loopback receivers are allowed by address (and so over plain http).
ALLOWED = "127.0.0.1"
# Fast retries, so a test sees several attempts in well under a second.
FAST = {"webhook_backoff_base_s": 0.05, "webhook_timeout_s": 0.5}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@dataclass
class Hooks:
    app: BillingServer
    wallet: wallet_service_pb2_grpc.WalletServiceAsyncStub
    hooks: webhook_service_pb2_grpc.WebhookServiceAsyncStub

    async def company(self) -> str:
        company = f"co-{uuid.uuid4().hex[:10]}"
        await self.wallet.CreateWallet(
            wallet_service_pb2.CreateWalletRequest(
                company_id=company, display_name=company, request_id=f"create-{company}"
            )
        )
        return company

    async def credit(self, company: str, amount_nanos: int) -> None:
        await self.wallet.CreditWallet(
            wallet_service_pb2.CreditWalletRequest(
                company_id=company, amount=money(amount_nanos), reason="test",
                request_id=f"credit-{uuid.uuid4().hex}",
            )
        )  # fmt: skip

    async def endpoint(
        self, url: str, *types: str, company: str = ""
    ) -> webhook_service_pb2.CreateWebhookEndpointResponse:
        return await self.hooks.CreateWebhookEndpoint(
            webhook_service_pb2.CreateWebhookEndpointRequest(
                url=url, event_types=list(types), company_id=company, request_id=f"ep-{uuid.uuid4().hex}"
            )
        )

    async def settled(
        self, state: int, count: int = 1, timeout_s: float = 15.0
    ) -> list[webhook_service_pb2.WebhookDelivery]:
        """The deliveries in `state`, once there are `count` (the receiver sees a request before the
        deliverer records its answer)."""
        deadline = time.monotonic() + timeout_s
        while len(found := await self.deliveries(state=state)) < count:
            assert time.monotonic() < deadline, f"{len(found)} deliveries in state {state}, not {count}"
            await asyncio.sleep(0.05)
        return found

    async def deliveries(self, **filters: object) -> list[webhook_service_pb2.WebhookDelivery]:
        reply = await self.hooks.ListWebhookDeliveries(
            webhook_service_pb2.ListWebhookDeliveriesRequest(page_size=500, **filters)  # type: ignore[arg-type]
        )
        return list(reply.deliveries)


async def start_hooks(db_url: str, **overrides: Any) -> BillingServer:
    config = server_config(db_pool_max_size=20)
    settings: dict[str, Any] = {"webhook_allowed_hosts": parse_allowed_hosts(ALLOWED), **FAST, **overrides}
    return await start_server(replace(config, **settings), database_url=db_url)


@pytest.fixture
async def hooks(db_url: str) -> AsyncIterator[Hooks]:
    app = await start_hooks(db_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Hooks(
            app,
            wallet_service_pb2_grpc.WalletServiceStub(channel),
            webhook_service_pb2_grpc.WebhookServiceStub(channel),
        )
    await app.stop(grace_s=1)
