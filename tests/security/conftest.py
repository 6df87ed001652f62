"""Fixtures for the security tests: a server with BILLING_AUTH=required, keys made through the real use
case, and channels that carry a key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace

import asyncpg
import grpc
import pytest

from service.app.api_keys import create_key
from service.config import load_config
from service.security_config import SecurityConfig
from service.server import BillingServer, start_server

MakeKey = Callable[..., Awaitable[str]]


def auth_config(**security: object) -> object:
    settings = {"auth": "required", "auth_explicit": True, "reflection": "authenticated", **security}
    return replace(
        load_config({}),
        grpc_host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        webhook_port=0,
        health_probe_interval_s=0.2,
        security=SecurityConfig(**settings),  # type: ignore[arg-type]
    )


@pytest.fixture
async def secure_app(db_url: str) -> AsyncIterator[BillingServer]:
    running = await start_server(auth_config(), database_url=db_url)  # type: ignore[arg-type]
    yield running
    await running.stop(grace_s=1)


@pytest.fixture
async def make_key(pool: asyncpg.Pool) -> MakeKey:
    """make_key(role, companies=None, name=...) -> the secret."""

    async def make(role: str, companies: Sequence[str] | None = None, name: str = "test key") -> str:
        created = await create_key(pool, name, role, companies, created_by="test")
        return created.secret

    return make


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


@pytest.fixture
async def channel(secure_app: BillingServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secure_app.port}") as opened:
        yield opened


# The canonical line is logged at info: the ops tests' fixture that turns it on, shared here.
from tests.ops.conftest import info_logs  # noqa: E402, F401
