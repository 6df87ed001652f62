"""A real server on port 0 with chosen limits, and its stubs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
from consofta.billing.v1 import usage_service_pb2_grpc, wallet_service_pb2_grpc

from service.config import load_config
from service.server import BillingServer, start_server
from tests.conftest import Stubs


@contextlib.asynccontextmanager
async def serving(db_url: str, **limits: Any) -> AsyncIterator[tuple[BillingServer, Stubs]]:
    settings: dict[str, Any] = {"db_pool_max_size": 20, "health_probe_interval_s": 0.2, **limits}
    config = replace(
        load_config({}), grpc_host="127.0.0.1", grpc_port=0, metrics_port=0, webhook_port=0, **settings
    )
    app = await start_server(config, database_url=db_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield (
                app,
                Stubs(
                    channel,
                    usage_service_pb2_grpc.UsageServiceStub(channel),
                    wallet_service_pb2_grpc.WalletServiceStub(channel),
                ),
            )
    finally:
        await app.stop(grace_s=1)


async def emit(conn: Any, company: str, count: int, event_type: str = "test_event") -> None:
    """`count` events for the company, committed together (one transaction, one NOTIFY each)."""
    await conn.execute(
        "select emit_wallet_event($1, $2, jsonb_build_object('i', i)) from generate_series(1, $3) as i",
        company,
        event_type,
        count,
    )
