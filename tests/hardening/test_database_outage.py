"""While the database is unreachable every RPC is UNAVAILABLE (which clients retry under the same key),
never INTERNAL, and health says NOT_SERVING; when it is back, both recover by themselves."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.pool import ensure_database, with_database
from service.server import start_server
from tests.conftest import Stubs
from tests.support.config import server_config
from tests.support.rpc import rich_error

pytestmark = pytest.mark.slow


@pytest.fixture
async def own_postgres() -> AsyncIterator[EmbeddedPostgres]:
    """A Postgres this test may stop: never the suite's shared one."""
    with tempfile.TemporaryDirectory(prefix="billing-outage-") as folder:
        os.chmod(folder, 0o755)
        embedded = EmbeddedPostgres(Path(folder) / "pgdata")
        await asyncio.to_thread(embedded.start)
        try:
            yield embedded
        finally:
            await asyncio.to_thread(embedded.stop)


def _stop_immediately(embedded: EmbeddedPostgres) -> None:
    pid = int((embedded.pgdata / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGQUIT)  # what `pg_ctl -m immediate stop` sends
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("postmaster did not stop")


async def _status(health: health_pb2_grpc.HealthStub) -> int:
    return int((await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status)


async def _wait_status(health: health_pb2_grpc.HealthStub, wanted: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := await _status(health)) != wanted:
        assert time.monotonic() < deadline, f"health is {status}, not {wanted}"
        await asyncio.sleep(0.1)


async def test_an_unreachable_database_is_unavailable_and_not_serving_until_it_returns(
    own_postgres: EmbeddedPostgres,
) -> None:
    admin_url = own_postgres.url("postgres")
    await ensure_database(admin_url, DATABASE_NAME)
    app = await start_server(
        server_config(health_probe_interval_s=0.2), database_url=with_database(admin_url, DATABASE_NAME)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stubs = Stubs(
                channel,
                usage_service_pb2_grpc.UsageServiceStub(channel),
                wallet_service_pb2_grpc.WalletServiceStub(channel),
            )
            health = health_pb2_grpc.HealthStub(channel)
            company = await stubs.new_company()
            await _wait_status(health, health_pb2.HealthCheckResponse.SERVING)

            await asyncio.to_thread(_stop_immediately, own_postgres)
            for call in (
                stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company)),
                stubs.usage.RecordUsage(_email(company, "during-outage")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                error = rich_error(caught.value)
                assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"), (
                    error
                )
            await _wait_status(health, health_pb2.HealthCheckResponse.NOT_SERVING)

            await asyncio.to_thread(own_postgres._server.ensure_postgres_running)
            await _wait_status(health, health_pb2.HealthCheckResponse.SERVING)
            reply = await stubs.usage.RecordUsage(_email(company, "during-outage"))
            assert reply.usage_record.id
    finally:
        await app.stop(grace_s=1)


def _email(company: str, key: str) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company, idempotency_key=key, usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=3))
    )
