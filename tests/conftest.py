"""Shared fixtures: a real Postgres, a real server on port 0, and the generated stubs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from consofta.billing.client import AsyncBillingClient
from consofta.billing.v1 import (
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service import tracing
from service.logs import configure_logging
from service.server import BillingServer, start_server
from tests.support.config import server_config
from tests.support.database import TestPostgres
from tests.support.ledger import assert_ledger_invariants
from tests.support.watchdog import bound_async_tests

configure_logging("console", "warning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    bound_async_tests(items)


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[TestPostgres]:
    server = TestPostgres()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def db_url(postgres: TestPostgres) -> AsyncIterator[str]:
    """A fresh migrated database for this test; the ledger invariants are checked when it ends."""
    async with postgres.database() as url:
        yield url
        conn = await asyncpg.connect(url)
        try:
            await assert_ledger_invariants(conn)
        finally:
            await conn.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(db_url, min_size=1, max_size=20)
    assert created is not None
    yield created
    await created.close()


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[BillingServer]:
    config = server_config(
        db_pool_max_size=20,
        health_probe_interval_s=0.2,
    )
    running = await start_server(config, database_url=db_url)
    yield running
    await running.stop(grace_s=1)


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    usage: usage_service_pb2_grpc.UsageServiceAsyncStub
    wallet: wallet_service_pb2_grpc.WalletServiceAsyncStub

    async def new_company(self, company_id: str | None = None) -> str:
        company_id = company_id or f"co-{uuid.uuid4().hex[:12]}"
        await self.wallet.CreateWallet(
            wallet_service_pb2.CreateWalletRequest(
                company_id=company_id, display_name=f"Company {company_id}", request_id=f"create-{company_id}"
            )
        )
        return company_id


@pytest.fixture
async def stubs(app: BillingServer) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Stubs(
            channel,
            usage_service_pb2_grpc.UsageServiceStub(channel),
            wallet_service_pb2_grpc.WalletServiceStub(channel),
        )


@pytest.fixture
async def billing(app: BillingServer) -> AsyncIterator[AsyncBillingClient]:
    """The client library (clients/), as other services call us."""
    async with AsyncBillingClient(f"127.0.0.1:{app.port}") as client:
        yield client


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, every span kept in memory; ask for it before the server fixture."""
    exporter = InMemorySpanExporter()
    running = tracing.start({}, exporter=exporter)
    assert running is not None
    try:
        yield exporter
    finally:
        running.shutdown()
