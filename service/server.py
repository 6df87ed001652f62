"""Composition root: wires config, database, servicers, health and reflection into one server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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
from service.api.limits import CallLimits
from service.api.reflection import enable_reflection
from service.api.server_options import server_options
from service.api.settings_servicer import SettingsServicer
from service.api.usage_servicer import UsageServicer
from service.api.wallet_servicer import WalletServicer
from service.app.event_streams import EventNotifier
from service.config import Config
from service.db.embedded import EmbeddedPostgres
from service.db.pool import CountingPool, create_pool
from service.db.startup import apply_migrations, open_database
from service.domain.settings import ApprovalLevels, RechargeBounds
from service.health import DatabaseHealth
from service.metrics import MetricsServer, ServerGauges
from service.payments.factory import check_provider_choice, make_provider
from service.payments.provider import PaymentProvider
from service.recharge.loop import LoopSettings, RechargeLoop
from service.recharge.webhooks import WebhookServer

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    wallet_service_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
    settings_service_pb2.DESCRIPTOR.services_by_name["SettingsService"].full_name,
)


# A background task's "stop taking new work and finish within grace_s" (seconds).
StopHook = Callable[[float], Awaitable[None]]


@dataclass
class BillingServer:
    """A running service: gRPC server, pool, health probe, metrics and (maybe) embedded Postgres."""

    config: Config
    server: grpc.aio.Server
    port: int
    pool: CountingPool
    health: DatabaseHealth
    embedded: EmbeddedPostgres | None = None
    provider: PaymentProvider | None = None
    events: EventNotifier | None = None
    metrics: MetricsServer | None = None
    edge: EdgeInterceptor | None = None
    recharge: RechargeLoop | None = None
    # None when no webhook secret is configured (the sandbox provider sends no webhooks).
    webhooks: WebhookServer | None = None
    # Background work (the recharge loop...) registers here how to stop taking new work; each hook
    # runs on shutdown after health goes NOT_SERVING and before the gRPC server stops.
    background_stops: list[StopHook] = field(default_factory=list)
    _stopped: bool = field(default=False, init=False)

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics is None else self.metrics.port

    def on_stop(self, hook: StopHook) -> None:
        """Run `hook` at shutdown, before the gRPC server stops (hooks run in the order added)."""
        self.background_stops.append(hook)

    async def stop(self, grace_s: float | None = None) -> None:
        """Shut down in the order that loses nothing.

        1. Health goes NOT_SERVING, so load balancers stop sending new calls, and new calls are refused
           with UNAVAILABLE from then on.
        2. Background loops stop taking new work (each hook gets the grace period).
        3. Calls in flight get the grace period, and those still
           running then end with UNAVAILABLE (their statement is cancelled, so their transaction rolls
           back; a caller retries with the same idempotency key). Then the gRPC server stops.
        4. The metrics server, the pool and the embedded Postgres (if any) close.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        log.info("shutting down", grace_s=grace)
        await self.health.enter_graceful_shutdown()
        if self.edge is not None:
            # Refused from the moment health says NOT_SERVING, so no caller that already saw it lands a
            # new call on a server that is going away.
            self.edge.drain.refuse_new_calls()
        for hook in self.background_stops:
            try:
                # The hook gets the grace to finish its work; the outer bound only guards against a hang.
                await asyncio.wait_for(hook(grace), timeout=max(grace, 0.1) + 5.0)
            except Exception:
                log.exception("background task did not stop cleanly", hook=getattr(hook, "__qualname__", "?"))
        if self.events is not None:
            # Open event streams end now with UNAVAILABLE instead of holding the shutdown for the grace.
            await self.events.close()
        if self.edge is not None:
            ended = await self.edge.drain.drain(grace)
            if ended:
                log.warning("calls still running at the end of the grace period ended", calls=ended)
        # Whatever gRPC itself still holds (health, reflection streams) gets a short grace of its own.
        await self.server.stop(min(grace, 1.0))
        if self.provider is not None:
            await self.provider.aclose()
        if self.metrics is not None:
            await self.metrics.stop()
        try:
            # Every call is over, so connections come back at once; the bound is for a stuck socket.
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            log.warning("pool did not close in time; terminating its connections")
            self.pool.terminate()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("stopped")


async def start_server(config: Config, database_url: str | None = None) -> BillingServer:
    """Start everything; `database_url` overrides the config (tests pass their own database)."""
    check_provider_choice(config)  # before anything is opened that a refusal would leave behind
    embedded = None
    if database_url is None:
        database_url, embedded = await open_database(config)
    try:
        await apply_migrations(database_url)
        pool = await create_pool(
            database_url,
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            acquire_timeout_s=config.db_acquire_timeout_s,
            statement_timeout_s=config.db_statement_timeout_s,
        )
        events = EventNotifier(database_url, pool, config.watch_stream_buffer_events)
        try:
            await events.start()
        except BaseException:
            await pool.close()
            raise
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise

    edge = EdgeInterceptor(CallLimits(config), config.default_deadline_s)
    server = grpc.aio.server(interceptors=[edge], options=server_options(config))
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(pool), server)
    wallet_service_pb2_grpc.add_WalletServiceServicer_to_server(WalletServicer(pool, events), server)
    provider = make_provider(config)
    bounds = RechargeBounds(config.recharge_amount_min_nanos, config.recharge_amount_max_nanos)
    approval = ApprovalLevels(
        config.recharge_ceilings.approval_minimum_balance_nanos,
        config.recharge_ceilings.approval_monthly_cap_nanos,
    )
    settings_service_pb2_grpc.add_SettingsServiceServicer_to_server(
        SettingsServicer(pool, provider, bounds, approval), server
    )
    health = DatabaseHealth(pool, SERVICE_NAMES, config.health_probe_interval_s)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    enable_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    port = server.add_insecure_port(f"{config.grpc_host}:{config.grpc_port}")
    metrics = None
    if config.metrics_port is not None:
        metrics = MetricsServer(ServerGauges(pool, lambda: pool.waiting, database_url))
        try:
            await metrics.start(config.metrics_host, config.metrics_port)
        except BaseException:  # e.g. the port is taken: leave nothing running behind us
            await provider.aclose()
            await events.close()
            await pool.close()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            raise
    await health.start()
    await server.start()
    log.info(
        "serving",
        host=config.grpc_host,
        port=port,
        metrics_port=None if metrics is None else metrics.port,
        embedded_postgres=embedded is not None,
        payment_provider=config.payment_provider,
    )
    running = BillingServer(
        config,
        server,
        port,
        pool,
        health,
        embedded,
        provider=provider,
        events=events,
        metrics=metrics,
        edge=edge,
    )
    try:
        settings = LoopSettings.from_config(config)
        running.recharge = RechargeLoop(pool, provider, database_url, settings)
        await running.recharge.start()
        if config.stripe_webhook_secret:
            running.webhooks = WebhookServer(
                pool, provider, settings.backoff, on_settled=running.recharge.wake
            )
            await running.webhooks.start(config.webhook_host, config.webhook_port)
            # Webhooks stop first, then the loop: no new charge starts while the process is going away,
            # and both need the pool, which closes last.
            webhooks = running.webhooks
            running.on_stop(lambda _grace_s: webhooks.stop())
        running.on_stop(running.recharge.stop)
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
