"""The configuration's values: what load_config() returns, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.domain.money import NANOS_PER_USD
from service.domain.webhook_hosts import AllowedHosts
from service.security_config import SecurityConfig

# A stream's buffer holds at least one page of the event reader (service/app/events.py reads 500 at a
# time), so a stream that keeps up is never ended by a burst.
MIN_STREAM_BUFFER_EVENTS = 500


class ConfigError(ValueError):
    """One bad setting; str() is the one-line message shown to the operator."""


class StartupError(Exception):
    """A setting that cannot be honoured at start (a port taken, a data folder in use): str() is one line
    naming the setting; the command exits 2 after stopping whatever it had started."""


@dataclass(frozen=True)
class RechargeCeilings:
    """Limits on automatic charges that no company setting can lift (deployment configuration)."""

    # One charge (a recharge of k x the recharge amount, or a pre-load) never exceeds this.
    max_charge_nanos: int = 10_000 * NANOS_PER_USD
    # What one company may be charged automatically in any 24 hours.
    max_daily_nanos: int = 20_000 * NANOS_PER_USD
    # More charge attempts than this for one company within an hour pause its auto-recharge.
    max_charges_per_hour: int = 10
    # Raising the minimum balance or the monthly cap above these (or clearing the cap) needs the finance
    # or admin role (settings.may_raise_above_approval_level) and is reported as a wallet event.
    approval_minimum_balance_nanos: int = 1_000 * NANOS_PER_USD
    approval_monthly_cap_nanos: int = 10_000 * NANOS_PER_USD


@dataclass(frozen=True)
class Config:
    database_url: str | None = field(repr=False)  # may carry a password
    pgdata: Path
    grpc_host: str
    grpc_port: int
    db_pool_min_size: int
    db_pool_max_size: int
    log_format: str
    log_level: str
    shutdown_grace_s: float
    health_probe_interval_s: float
    # Everything below has the default load_config({}) gives it, so code building a Config by hand
    # keeps working as settings are added.
    # auto | uvloop | asyncio: the serving processes' event loop (service/event_loop.py).
    event_loop: str = "auto"
    # The deployment's bounds for one automatic recharge or pre-load.
    recharge_amount_min_nanos: int = 5 * NANOS_PER_USD
    recharge_amount_max_nanos: int = 10_000 * NANOS_PER_USD
    # Empty: the sandbox payment provider is used and no real money moves. Never shown (repr=False).
    stripe_secret_key: str = field(default="", repr=False)
    stripe_webhook_secret: str = field(default="", repr=False)
    # Only for tests and Stripe-compatible fakes; empty means Stripe's own API.
    stripe_api_base: str = ""
    # Prometheus /metrics; None when switched off (BILLING_METRICS_PORT=off).
    metrics_port: int | None = 9464
    webhook_port: int = 8080
    # The recharge loop.
    recharge_sweep_interval_s: float = 60.0
    # Waits before a new attempt after each soft decline; after the last one, auto-recharge pauses.
    recharge_retry_backoff_s: tuple[float, ...] = (3600.0, 21600.0, 86400.0)
    # Waits before retrying the same attempt (same idempotency key) after an unknown outcome, and
    # between polls of a processing PaymentIntent; the last value repeats.
    recharge_unknown_retry_backoff_s: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0)
    # How long a process owns an attempt it claimed; provider calls are cut off well inside it.
    recharge_lease_s: float = 60.0
    # Authentication, reflection, TLS and mTLS (service/security_config.py).
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # The gRPC server's connection limits (service/api/server_options.py turns them into grpc options).
    grpc_max_concurrent_streams: int = 512
    grpc_keepalive_time_s: float = 60.0
    grpc_keepalive_timeout_s: float = 20.0
    grpc_min_ping_interval_s: float = 10.0
    grpc_max_connection_idle_s: float = 900.0
    grpc_max_connection_age_s: float = 1800.0
    grpc_max_connection_age_grace_s: float = 300.0
    grpc_max_receive_message_bytes: int = 4 * 1024 * 1024
    # Open WatchWalletEvents streams one caller may hold in this process.
    watch_streams_per_caller: int = 100
    # Events queued for one stream before it is ended as too slow (it resumes from its cursor).
    watch_stream_buffer_events: int = 2000
    # Heavy reads running at once in this process, per method; past them, RESOURCE_EXHAUSTED.
    max_concurrent_statements: int = 2
    max_concurrent_exports: int = 2
    max_concurrent_summaries: int = 2
    # Waiting for a pool connection longer than this answers UNAVAILABLE.
    db_acquire_timeout_s: float = 5.0
    db_statement_timeout_s: float = 30.0
    # The deadline of a unary call that comes without one.
    default_deadline_s: float = 30.0
    # Server processes `serve` runs on the gRPC port (service/supervisor.py); 1 serves in this process.
    grpc_workers: int = 1
    # Group commit of RecordUsage (service/app/usage_batcher.py): the most usages in one transaction,
    # the most waiting, and how many transactions may be in flight at once.
    usage_batch_max: int = 1000
    usage_queue_max: int = 20_000
    usage_flushers: int = 1
    # ---- payments, ceilings and listeners (abuse bounds) ----
    # "stripe" or "sandbox", chosen by BILLING_PAYMENT_PROVIDER; only the embedded database (no
    # DATABASE_URL) implies the sandbox, which is what load_config({}) gives.
    payment_provider: str = "sandbox"
    # BILLING_ALLOW_SANDBOX=1: the sandbox may run against an external DATABASE_URL.
    allow_sandbox: bool = False
    # The webhook secret being rotated out, accepted beside stripe_webhook_secret while it is set.
    stripe_webhook_secret_previous: str = field(default="", repr=False)
    recharge_ceilings: RechargeCeilings = field(default_factory=RechargeCeilings)
    # Where /metrics and the Stripe webhooks listen: loopback unless the deployment opens them (the
    # Docker image sets 0.0.0.0 for both).
    metrics_host: str = "127.0.0.1"
    webhook_host: str = "127.0.0.1"
    # Outbound webhooks (service/webhooks/): off while the allow-list is empty.
    webhook_allowed_hosts: AllowedHosts = field(default_factory=AllowedHosts)
    webhook_timeout_s: float = 10.0
    webhook_retry_for_s: float = 72 * 3600.0
    webhook_backoff_base_s: float = 30.0
