"""A running service, and its shutdown in the order that loses nothing (start_server builds it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import structlog

from service.api.interceptors import EdgeInterceptor
from service.api.limits import CallLimits
from service.api.transport import CertificateFiles
from service.app.event_reader import EventNotifier
from service.app.usage_batcher import UsageBatcher
from service.config import Config
from service.db.embedded import EmbeddedPostgres
from service.db.pool import CountingPool
from service.health import DatabaseHealth
from service.metrics import MetricsServer
from service.payments.provider import PaymentProvider
from service.recharge.loop import RechargeLoop
from service.recharge.webhooks import WebhookServer
from service.webhooks.deliverer import Deliverer

log = structlog.get_logger(__name__)


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
    limits: CallLimits | None = None
    batcher: UsageBatcher | None = None
    recharge: RechargeLoop | None = None
    # None when no webhook secret is configured (the sandbox provider sends no webhooks).
    webhooks: WebhookServer | None = None
    # Outbound webhooks; None while BILLING_WEBHOOK_ALLOWED_HOSTS is empty.
    deliverer: Deliverer | None = None
    # The TLS certificate files, re-read when they change on disk or on SIGHUP; None without TLS.
    certificates: CertificateFiles | None = None
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
        if self.batcher is not None:
            # Every call is answered by now; a flush still committing finishes (its callers retry and
            # get replays), and nothing is left queued.
            await self.batcher.stop(min(grace, 1.0))
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
