"""Prometheus metrics, served at /metrics on BILLING_METRICS_PORT.

Counters and histograms are process-wide (module level, in `REGISTRY`), so any module can count what it
does: the interceptor counts RPCs, the usage servicer counts usage, the recharge loop counts attempts
(`RECHARGE_ATTEMPTS.labels(outcome=...).inc()`). Gauges that describe one running server (its pool, the
wallets below their minimum) are read when Prometheus scrapes, by `ServerGauges`, so nothing polls in
between.

RPC metric names follow go-grpc-prometheus (`grpc_server_handled_total`,
`grpc_server_handling_seconds`), so the usual gRPC dashboards work unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

RPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
    registry=REGISTRY,
)
RPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to its status, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
    # RecordUsage is one database round trip (a few ms); the tail is lock waits and pool queueing.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
USAGE_RECORDED = Counter(
    "billing_usage_recorded",
    "Usage records created (replays not counted), by usage type.",
    ["usage_type"],
    registry=REGISTRY,
)
# Nanos, as an integer-valued counter: exact up to 2^53 nanos (about $9 million) per process lifetime
# and label, because Prometheus samples are float64; beyond that the metric (never the ledger) rounds.
USAGE_DEBITED_NANOS = Counter(
    "billing_usage_debited_nanos",
    "Amount debited from wallets for usage, in nano-USD (1 USD = 1e9), by usage type.",
    ["usage_type"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "billing_webhook_delivery_attempts",
    "Outbound webhook delivery attempts, by result: delivered (a 2xx answer), http_error (any other "
    "status), timeout, connection_error, refused (the allow-list refused the URL at this attempt).",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "billing_webhook_delivery_seconds",
    "Time of one delivery attempt's HTTP request, from sending to the answer (or the error), by result.",
    ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
WEBHOOK_GAVE_UP = Counter(
    "billing_webhook_deliveries_failed",
    "Deliveries given up after their retry window (BILLING_WEBHOOK_RETRY_FOR_S): listed with "
    "ListWebhookDeliveries, sent again with RedeliverWebhookDelivery.",
    registry=REGISTRY,
)
USAGE_BATCH_SIZE = Histogram(
    "billing_usage_batch_size",
    "Usages applied by one record_usages() call of the group commit (unary calls and RecordUsageBatch "
    "items together).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
    registry=REGISTRY,
)
RECHARGE_ATTEMPTS = Counter(
    "billing_recharge_attempts",
    "Outcomes recorded for recharge attempts, by outcome (succeeded, processing, requires_action, "
    "hard_decline, soft_decline, unknown, refused, ...; an attempt retried after an unknown outcome counts "
    "each answer).",
    ["outcome"],
    registry=REGISTRY,
)

STRIPE_WEBHOOKS = Counter(
    "billing_stripe_webhooks",
    "Stripe webhook deliveries, by result: applied, duplicate, held_for_review, ignored_type, ignored_final, "
    "unknown_attempt, "
    "rejected (HTTP 400: bad signature or payload) or retry_later (HTTP 503: Stripe delivers it again).",
    ["result"],
    registry=REGISTRY,
)

_rpc_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def observe_rpc(method: str, code: str, duration_s: float) -> None:
    """Count one finished RPC. `method` is gRPC's `/package.Service/Method`."""
    children = _rpc_children.get((method, code))
    if children is None:
        # labels() takes a lock and builds a key; resolve each (method, code) pair once.
        service, _, name = method.lstrip("/").rpartition("/")
        children = (
            RPC_HANDLED.labels(service, name, code),
            RPC_HANDLING_SECONDS.labels(service, name, code),
        )
        _rpc_children[(method, code)] = children
    children[0].inc()
    children[1].observe(duration_s)


def observe_usage_batch(usages: int) -> None:
    USAGE_BATCH_SIZE.observe(usages)


_usage_children: dict[str, tuple[Counter, Counter]] = {}


def observe_usage(usage_type: str, amount_nanos: int) -> None:
    children = _usage_children.get(usage_type)
    if children is None:
        children = (USAGE_RECORDED.labels(usage_type), USAGE_DEBITED_NANOS.labels(usage_type))
        _usage_children[usage_type] = children
    children[0].inc()
    children[1].inc(amount_nanos)


class ServerGauges:
    """Gauges of one running server, refreshed at scrape time.

    The wallet query runs on a connection of its own, not the pool's: a scrape must neither wait behind
    an exhausted pool (exactly when the numbers matter) nor show up in the pool gauges it reports.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        waiting: Callable[[], int],
        database_url: str,
        query_timeout_s: float = 2.0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._pool = pool
        self._waiting = waiting
        self._database_url = database_url
        self._conn: asyncpg.Connection | None = None
        self._timeout_s = query_timeout_s
        # One connection and at most one query at a time, whatever the number of concurrent scrapes:
        # a scrape that comes while the query runs waits for it and shares its answer.
        self._in_flight: asyncio.Future[None] | None = None
        self.queries = 0
        self.pool_size = Gauge(
            "billing_db_pool_connections", "Open database connections in the pool.", registry=self.registry
        )
        self.pool_in_use = Gauge(
            "billing_db_pool_in_use", "Pool connections lent out to a caller.", registry=self.registry
        )
        self.pool_waiting = Gauge(
            "billing_db_pool_waiting",
            "Callers waiting to acquire a pool connection.",
            registry=self.registry,
        )
        self.wallets_below_minimum = Gauge(
            "billing_wallets_below_minimum",
            "Wallets whose balance is below their minimum (the same for every replica: use max()).",
            registry=self.registry,
        )
        self.wallets_recharge_paused = Gauge(
            "billing_wallets_recharge_paused",
            "Wallets whose auto-recharge is paused until a card is set again (database-wide: use max()).",
            registry=self.registry,
        )
        self.wallets_awaiting_recharge = Gauge(
            "billing_wallets_awaiting_recharge",
            "Wallets below their minimum that auto-recharge should be lifting: enabled, a card, not paused "
            "and not held by the monthly cap (database-wide: use max()).",
            registry=self.registry,
        )
        self.webhooks_pending = Gauge(
            "billing_webhook_deliveries_pending",
            "Outbound webhook deliveries not yet delivered nor given up (database-wide: use max()).",
            registry=self.registry,
        )
        self.webhooks_oldest_pending_s = Gauge(
            "billing_webhook_oldest_pending_seconds",
            "Age of the oldest pending outbound webhook delivery, 0 when none (database-wide: use max()).",
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "billing_metrics_scrape_errors",
            "Scrapes whose database query failed (the gauge keeps its last value).",
            registry=self.registry,
        )

    async def _count_wallets(self) -> asyncpg.Record:
        self.queries += 1
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._database_url, server_settings={"application_name": "consofta-billing-metrics"}
            )
        # One pass over wallets (one row per company): cheap at the scale of a scrape interval.
        counts = await self._conn.fetchrow(
            """
            select count(*) filter (where w.balance_nanos < w.minimum_balance_nanos) as below_minimum,
                   count(*) filter (where s.auto_recharge_paused_reason is not null) as paused,
                   count(*) filter (
                       where w.balance_nanos < w.minimum_balance_nanos and w.has_card
                         and s.auto_recharge_enabled and s.auto_recharge_paused_reason is null
                         and s.recharge_blocked_by_cap_at is null
                   ) as awaiting_recharge,
                   -- Both from the (state, created_at) index: few rows are pending at any time.
                   (select count(*) from webhook_deliveries where state = 'pending') as webhooks_pending,
                   (select coalesce(extract(epoch from now() - min(created_at)), 0) from webhook_deliveries
                     where state = 'pending')::float8 as webhooks_oldest_pending_s
              from wallets w left join billing_settings s using (company_id)
            """
        )
        assert counts is not None
        return counts

    async def refresh(self) -> None:
        size = self._pool.get_size()
        self.pool_size.set(size)
        self.pool_in_use.set(size - self._pool.get_idle_size())
        self.pool_waiting.set(self._waiting())
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._refresh_below_minimum())
            self._in_flight.add_done_callback(self._query_done)
        # Shielded: a scrape that gives up does not cancel the query the others wait for.
        await asyncio.shield(self._in_flight)

    def _query_done(self, _future: asyncio.Future[None]) -> None:
        self._in_flight = None

    async def _refresh_below_minimum(self) -> None:
        try:
            counts = await asyncio.wait_for(self._count_wallets(), timeout=self._timeout_s)
            self.wallets_below_minimum.set(counts["below_minimum"])
            self.wallets_recharge_paused.set(counts["paused"])
            self.wallets_awaiting_recharge.set(counts["awaiting_recharge"])
            self.webhooks_pending.set(counts["webhooks_pending"])
            self.webhooks_oldest_pending_s.set(counts["webhooks_oldest_pending_s"])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self.scrape_errors.inc()
            log.warning("metrics query failed", error=str(exc))
            if self._conn is not None:
                self._conn.terminate()  # maybe half-way through a query: start afresh next time
                self._conn = None

    async def close(self) -> None:
        if self._in_flight is not None:
            await asyncio.gather(self._in_flight, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def render(gauges: ServerGauges | None) -> bytes:
    text = generate_latest(REGISTRY)
    if gauges is not None:
        text += generate_latest(gauges.registry)
    return text


class MetricsServer:
    """A tiny aiohttp app: GET /metrics on the metrics port."""

    def __init__(self, gauges: ServerGauges | None) -> None:
        self._gauges = gauges
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self._gauges is not None:
            await self._gauges.refresh()
        body = render(self._gauges)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        # No access log: Prometheus scrapes every few seconds and the lines say nothing.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._gauges is not None:
            await self._gauges.close()
