"""Composition root: wires config, database, servicers, health and reflection into one server."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

import asyncpg
import grpc
import structlog
from consofta.billing.v1 import (
    settings_service_pb2,
    settings_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.interceptors import EdgeInterceptor
from service.api.reflection import enable_reflection
from service.api.settings_servicer import SettingsServicer
from service.api.usage_servicer import UsageServicer
from service.api.wallet_servicer import WalletServicer
from service.app.events import EventNotifier
from service.config import Config
from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.migrate import migrate
from service.db.pool import create_pool, ensure_database, with_database
from service.domain.settings import RechargeBounds
from service.health import DatabaseHealth
from service.payments.factory import make_provider
from service.payments.provider import PaymentProvider
from service.recharge.loop import LoopSettings, RechargeLoop
from service.recharge.webhooks import WebhookServer

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    wallet_service_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
    settings_service_pb2.DESCRIPTOR.services_by_name["SettingsService"].full_name,
)


async def open_database(config: Config) -> tuple[str, EmbeddedPostgres | None]:
    """The database URL to use, starting an embedded Postgres when none is configured."""
    if config.database_url:
        return config.database_url, None
    embedded = EmbeddedPostgres(config.pgdata)
    # initdb/pg_ctl block for a second or two; keep the event loop free meanwhile.
    admin_url = await asyncio.to_thread(embedded.start)
    await ensure_database(admin_url, DATABASE_NAME)
    return with_database(admin_url, DATABASE_NAME), embedded


async def apply_migrations(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


@dataclass
class BillingServer:
    """A running service: gRPC server, pool, health probe and (maybe) embedded Postgres."""

    config: Config
    server: grpc.aio.Server
    port: int
    pool: asyncpg.Pool
    health: DatabaseHealth
    embedded: EmbeddedPostgres | None = None
    provider: PaymentProvider | None = None
    events: EventNotifier | None = None
    recharge: RechargeLoop | None = None
    # None when no webhook secret is configured (the sandbox provider sends no webhooks).
    webhooks: WebhookServer | None = None
    _stopped: bool = field(default=False, init=False)

    async def stop(self, grace_s: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        log.info("shutting down", grace_s=grace)
        await self.health.enter_graceful_shutdown()
        # Recharges and webhooks stop first: they need the pool, and no new charge should start
        # while the process is going away.
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.recharge is not None:
            await self.recharge.stop(grace_s=grace)
        if self.events is not None:
            # Open event streams end now with UNAVAILABLE instead of holding the shutdown for the grace.
            await self.events.close()
        await self.server.stop(grace)
        if self.provider is not None:
            await self.provider.aclose()
        await self.pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("stopped")


async def start_server(config: Config, database_url: str | None = None) -> BillingServer:
    """Start everything; `database_url` overrides the config (tests pass their own database)."""
    embedded = None
    if database_url is None:
        database_url, embedded = await open_database(config)
    try:
        await apply_migrations(database_url)
        pool = await create_pool(
            database_url, min_size=config.db_pool_min_size, max_size=config.db_pool_max_size
        )
        events = EventNotifier(database_url)
        try:
            await events.start()
        except BaseException:
            await pool.close()
            raise
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise

    server = grpc.aio.server(interceptors=[EdgeInterceptor()])
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(pool), server)
    wallet_service_pb2_grpc.add_WalletServiceServicer_to_server(WalletServicer(pool, events), server)
    provider = make_provider(config)
    bounds = RechargeBounds(config.recharge_amount_min_nanos, config.recharge_amount_max_nanos)
    settings_service_pb2_grpc.add_SettingsServiceServicer_to_server(
        SettingsServicer(pool, provider, bounds), server
    )
    health = DatabaseHealth(pool, SERVICE_NAMES, config.health_probe_interval_s)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    enable_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    port = server.add_insecure_port(f"{config.grpc_host}:{config.grpc_port}")
    await health.start()
    await server.start()
    log.info("serving", host=config.grpc_host, port=port, embedded_postgres=embedded is not None)
    running = BillingServer(config, server, port, pool, health, embedded, provider, events)
    try:
        settings = LoopSettings.from_config(config)
        running.recharge = RechargeLoop(pool, provider, database_url, settings)
        await running.recharge.start()
        if config.stripe_webhook_secret:
            running.webhooks = WebhookServer(
                pool, provider, settings.backoff, on_settled=running.recharge.wake
            )
            await running.webhooks.start(config.grpc_host, config.webhook_port)
    except BaseException:
        await running.stop(grace_s=0)
        raise
    return running


async def serve(config: Config) -> None:
    """Run until SIGTERM or Ctrl-C, then shut down gracefully."""
    app = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()
