"""Composition root: wires config, database, servicers, health and reflection into one server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable

import grpc
import structlog
from consofta.billing.v1 import (
    settings_service_pb2,
    settings_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import tracing
from service.api.access_interceptor import AccessInterceptor
from service.api.auth import Authenticator
from service.api.interceptors import EdgeInterceptor
from service.api.limits import CallLimits, LimitsInterceptor
from service.api.reflection import enable_reflection
from service.api.server_options import server_options
from service.api.settings_servicer import SettingsServicer
from service.api.transport import bind, check_exposure
from service.api.usage_servicer import UsageServicer
from service.api.wallet_servicer import WalletServicer
from service.api.webhook_servicer import WebhookServicer
from service.app.event_reader import EventNotifier
from service.app.usage_batcher import UsageBatcher
from service.config import Config, StartupError
from service.db.budget import check_connection_budget
from service.db.connectivity import is_unreachable
from service.db.pool import create_pool
from service.db.startup import apply_migrations, open_database
from service.domain.settings_approval import ApprovalLevels
from service.domain.settings_checks import RechargeBounds
from service.event_loop import loop_name
from service.health import DatabaseHealth
from service.metrics import MetricsServer, ServerGauges, observe_usage_batch
from service.payments.factory import check_provider_choice, make_provider
from service.preflight import check_ports, in_use_error
from service.recharge.loop import LoopSettings, RechargeLoop
from service.recharge.webhooks import WebhookServer
from service.running import BillingServer
from service.webhooks.deliverer import Deliverer, DeliverySettings

log = structlog.get_logger(__name__)

# BillingServer lives in service.running; callers that start a server get it from here too.
__all__ = ["SERVICE_NAMES", "BillingServer", "serve", "start_server"]

SERVICE_NAMES = (
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
    wallet_service_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
    settings_service_pb2.DESCRIPTOR.services_by_name["SettingsService"].full_name,
    webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
)


async def start_server(
    config: Config, database_url: str | None = None, *, reuse_port: bool = False, check_budget: bool = True
) -> BillingServer:
    """Start everything; `database_url` overrides the config (tests pass their own database).

    A taken port fails before anything is started; any later failure stops, in reverse order, what this
    call started (and only that), then raises.
    `reuse_port`: share the gRPC and webhook ports with the other workers of `serve --workers N`
    (SO_REUSEPORT; the kernel spreads connections over them). Off, a port already in use is an error.
    `check_budget`: check this process's connections against max_connections (the supervisor checks
    all its workers' at once instead).
    """
    check_exposure(config)
    check_provider_choice(config)  # before anything is opened that a refusal would leave behind
    if not reuse_port:
        # Workers of `serve --workers N` share ports their siblings already hold; the parent checks.
        check_ports(config)
    undo: list[Callable[[], Awaitable[object]]] = []
    try:
        if database_url is None:
            database_url, embedded = await open_database(config)
            if embedded is not None:
                undo.append(functools.partial(asyncio.to_thread, embedded.stop))
        else:
            embedded = None
        try:
            await apply_migrations(database_url)
        except Exception as error:
            if not is_unreachable(error):
                raise
            setting = "DATABASE_URL" if config.database_url or embedded is None else "BILLING_PGDATA"
            raise StartupError(
                f"{setting}: cannot reach the database ({type(error).__name__}: {error})"
            ) from None
        if check_budget:
            await check_connection_budget(database_url, config, processes=1)
        pool = await create_pool(
            database_url,
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            acquire_timeout_s=config.db_acquire_timeout_s,
            statement_timeout_s=config.db_statement_timeout_s,
        )
        undo.append(pool.close)
        events = EventNotifier(database_url, pool, config.watch_stream_buffer_events)
        await events.start()
        undo.append(events.close)

        edge = EdgeInterceptor(config.default_deadline_s)
        limits = LimitsInterceptor(CallLimits(config))
        traced = tracing.active()
        # The tracing interceptor goes first, so that its span is current for the whole call, the edge's
        # canonical log line (which carries the trace id) included.
        security = config.security
        access = AccessInterceptor(
            Authenticator(pool, security.client_identities) if security.auth_required else None,
            reflection_needs_auth=security.reflection == "authenticated",
        )
        # The edge before `access`: a call refused by `access` still gets its log line, metrics and
        # rich status.
        interceptors = [edge, access, limits]
        if traced is not None:
            interceptors.insert(0, traced.server_interceptor)
        # SO_REUSEPORT only among the workers of one `serve --workers N`: otherwise a second server on a
        # taken port must fail, not share it with the first.
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[*server_options(config), ("grpc.so_reuseport", int(reuse_port))],
        )
        batcher = UsageBatcher(
            pool,
            max_batch=config.usage_batch_max,
            max_queue=config.usage_queue_max,
            max_flushes=config.usage_flushers,
            on_round=observe_usage_batch,
        )
        usage_service_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(pool, batcher), server)
        wallet_service_pb2_grpc.add_WalletServiceServicer_to_server(WalletServicer(pool, events), server)
        provider = make_provider(config)
        undo.append(provider.aclose)
        bounds = RechargeBounds(config.recharge_amount_min_nanos, config.recharge_amount_max_nanos)
        approval = ApprovalLevels(
            config.recharge_ceilings.approval_minimum_balance_nanos,
            config.recharge_ceilings.approval_monthly_cap_nanos,
        )
        settings_service_pb2_grpc.add_SettingsServiceServicer_to_server(
            SettingsServicer(pool, provider, bounds, approval), server
        )
        hooks = WebhookServicer(pool, config.webhook_allowed_hosts, config.webhook_retry_for_s)
        webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(hooks, server)
        health = DatabaseHealth(pool, SERVICE_NAMES, config.health_probe_interval_s)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        if security.reflection != "off":
            enable_reflection(
                (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
            )
        try:
            port, certificates = bind(server, config)
        except RuntimeError as error:  # taken between the pre-check and now
            raise in_use_error("BILLING_GRPC_PORT", config.grpc_host, config.grpc_port, str(error)) from None
        metrics = None
        if config.metrics_port is not None:
            metrics = MetricsServer(ServerGauges(pool, lambda: pool.waiting, database_url))
            try:
                await metrics.start(config.metrics_host, config.metrics_port)
            except OSError as error:
                raise in_use_error(
                    "BILLING_METRICS_PORT", config.metrics_host, config.metrics_port, error
                ) from None
            undo.append(metrics.stop)
        undo.append(health.enter_graceful_shutdown)
        await health.start()
        await server.start()
        undo.append(functools.partial(server.stop, 0))
    except BaseException:
        for step in reversed(undo):
            try:
                await step()
            except Exception:
                log.exception("could not undo a start-up step", step=getattr(step, "__qualname__", "?"))
        raise
    log.info(
        "serving",
        host=config.grpc_host,
        event_loop=loop_name(),
        port=port,
        metrics_port=None if metrics is None else metrics.port,
        embedded_postgres=embedded is not None,
        payment_provider=config.payment_provider,
        auth=security.auth,
        tls="mtls" if security.mtls else "tls" if security.tls else "off",
        reflection=security.reflection,
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
        limits=limits.limits,
        certificates=certificates,
        batcher=batcher,
    )
    try:
        settings = LoopSettings.from_config(config)
        running.recharge = RechargeLoop(pool, provider, database_url, settings)
        await running.recharge.start()
        if config.stripe_webhook_secret:
            running.webhooks = WebhookServer(
                pool, provider, settings.backoff, on_settled=running.recharge.wake
            )
            try:
                await running.webhooks.start(config.webhook_host, config.webhook_port, reuse_port=reuse_port)
            except OSError as error:
                raise in_use_error(
                    "BILLING_WEBHOOK_PORT", config.webhook_host, config.webhook_port, error
                ) from None
            # Webhooks stop first, then the loop: no new charge starts while the process is going away,
            # and both need the pool, which closes last.
            webhooks = running.webhooks
            running.on_stop(lambda _grace_s: webhooks.stop())
        running.on_stop(running.recharge.stop)
        if config.webhook_allowed_hosts.enabled:
            running.deliverer = Deliverer(pool, database_url, DeliverySettings.from_config(config))
            await running.deliverer.start()
            running.on_stop(running.deliverer.stop)
    except BaseException:
        await running.stop(grace_s=0)
        raise
    return running


async def serve(config: Config) -> None:
    """Run until SIGTERM or Ctrl-C, then shut down gracefully."""
    traced = tracing.start()
    try:
        await _serve_until_stopped(config)
    finally:
        if traced is not None:
            traced.shutdown()


async def _serve_until_stopped(config: Config) -> None:
    # Handlers go in before start-up, so a SIGTERM during it (a supervisor giving up on a slow start)
    # cancels the start, which undoes what it began, instead of killing the process mid-way.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(start_server(config), name="start-server")
    stopped = asyncio.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        log.info("stopped during start-up")
        return
    stopped.cancel()
    app = starting.result()
    if app.certificates is not None:
        # Rotation is picked up by itself; SIGHUP forces a re-read (e.g. where mtimes are coarse).
        loop.add_signal_handler(signal.SIGHUP, app.certificates.reload)
    try:
        await stop.wait()
    finally:
        await app.stop()
