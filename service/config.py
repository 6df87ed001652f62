"""Configuration, from environment variables only, validated once at start.

Every variable is listed in README.md ("Configuration"). A bad value stops the process with one line
that names the variable and what is wrong with it. Messages never repeat a secret's value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

from service.domain.money import NANOS_PER_CENT, NANOS_PER_USD
from service.domain.webhook_hosts import AllowedHosts, HostListError, parse_allowed_hosts

# The security settings are part of the configuration: other layers import them from here.
from service.security_config import (
    SecurityConfig,
    SecurityConfigError,
    exposure_problem,
    is_loopback,
    security_from_env,
)

__all__ = ["Config", "ConfigError", "SecurityConfig", "exposure_problem", "is_loopback", "load_config"]
# A stream's buffer holds at least one page of the event reader (service/app/events.py reads 500 at a
# time), so a stream that keeps up is never ended by a burst.
MIN_STREAM_BUFFER_EVENTS = 500
_DAY_S = 86400.0


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
    usage_flushers: int = 2
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


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, with an empty or blank value read as unset (compose passes `VAR=`)."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _get(env, name) or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={port} is out of range (0-65535; 0 picks a free port)")
    return port


def _optional_port(env: Mapping[str, str], name: str, default: int) -> int | None:
    raw = _get(env, name)
    if raw is not None and raw.lower() == "off":
        return None
    return _port(env, name, default)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _get(env, name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range ({low}-{high})")
    return value


def _one_duration(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)  # a duration, not money: floats are fine here
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(f"{name}={raw} is out of range ({low:g}-{high:g} seconds)")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _one_duration(name, _get(env, name) or str(default), low, high)


def _backoff(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = _get(env, name)
    if raw is None:
        return default
    steps = tuple(_one_duration(name, part.strip(), 0.01, 30 * 86400.0) for part in raw.split(","))
    if any(later < earlier for earlier, later in pairwise(steps)):
        raise ConfigError(f"{name}={raw!r} must not decrease (e.g. 3600,21600,86400)")
    return steps


def _usd_nanos(env: Mapping[str, str], name: str, default_nanos: int) -> int:
    """A dollar amount parsed as an exact decimal (never a float), whole cents, in nano-USD."""
    raw = _get(env, name)
    if raw is None:
        return default_nanos
    try:
        amount = Decimal(raw.removeprefix("$"))
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r} is not a dollar amount (e.g. 5.00)") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive dollar amount")
    # Recharges are card charges, and cards are charged in whole cents.
    if amount != amount.quantize(Decimal("0.01")):
        raise ConfigError(f"{name}={raw!r} must be whole cents (at most two decimal places)")
    nanos = int(amount * NANOS_PER_USD)
    if nanos > 1_000_000 * NANOS_PER_USD:
        raise ConfigError(f"{name}={raw!r} is above $1,000,000")
    return nanos


def _dollars(amount_nanos: int) -> str:
    cents = amount_nanos // NANOS_PER_CENT
    return f"${cents // 100}.{cents % 100:02d}"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which may be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def grpc_workers(raw: str | None, name: str = "BILLING_GRPC_WORKERS") -> int:
    """A number of server processes: 1-64, or `auto` for one per usable core; unset means 1."""
    if raw is None:
        return 1
    if raw.strip().lower() == "auto":
        return min(usable_cores(), 64)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number or 'auto'") from None
    if not 1 <= value <= 64:
        raise ConfigError(f"{name}={value} is out of range (1-64, or 'auto')")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (_get(env, name) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _database_url(env: Mapping[str, str]) -> str | None:
    raw = _get(env, "DATABASE_URL")
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "DATABASE_URL must start with postgresql:// (e.g. postgresql://user@host:5432/billing)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError("DATABASE_URL has a malformed port") from None
    if not parts.path.strip("/") and "host=" not in parts.query:
        raise ConfigError("DATABASE_URL names no database (postgresql://user@host:5432/DATABASE)")
    return raw


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = _get(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name}={raw!r} has a malformed port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL (e.g. http://localhost:12111)")
    return raw.rstrip("/")


def _stripe(env: Mapping[str, str]) -> tuple[str, str]:
    key = _get(env, "BILLING_STRIPE_SECRET_KEY") or ""
    secret = _get(env, "BILLING_STRIPE_WEBHOOK_SECRET") or ""
    # The values are secrets: the messages below describe them without repeating them.
    if key and not key.startswith(("sk_live_", "sk_test_", "rk_live_", "rk_test_")):
        raise ConfigError(
            "BILLING_STRIPE_SECRET_KEY must be a Stripe secret key (sk_live_…, sk_test_… or rk_…)"
        )
    if secret and not secret.startswith("whsec_"):
        raise ConfigError("BILLING_STRIPE_WEBHOOK_SECRET must be a webhook signing secret (whsec_…)")
    if key and not secret:
        raise ConfigError(
            "BILLING_STRIPE_WEBHOOK_SECRET is missing while BILLING_STRIPE_SECRET_KEY is set "
            "(without it no webhook could be verified)"
        )
    if secret and not key:
        raise ConfigError("BILLING_STRIPE_WEBHOOK_SECRET is set but BILLING_STRIPE_SECRET_KEY is not")
    return key, secret


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = _get(env, name)
    if raw is None or raw == "0":
        return False
    if raw == "1":
        return True
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")


def _payment_provider(env: Mapping[str, str], database_url: str | None, stripe_secret_key: str) -> str:
    """The provider the operator chose. Never guessed: only the embedded database implies the sandbox."""
    raw = _get(env, "BILLING_PAYMENT_PROVIDER")
    if raw is None:
        if database_url is not None:
            raise ConfigError(
                "BILLING_PAYMENT_PROVIDER is not set: choose stripe or sandbox (only the embedded database, "
                "without DATABASE_URL, implies the sandbox)"
            )
        if stripe_secret_key:
            raise ConfigError(
                "BILLING_STRIPE_SECRET_KEY is set but BILLING_PAYMENT_PROVIDER is not: set it to stripe"
            )
        return "sandbox"
    provider = raw.lower()
    if provider not in ("stripe", "sandbox"):
        raise ConfigError(f"BILLING_PAYMENT_PROVIDER={raw[:20]!r} must be stripe or sandbox")
    if provider == "stripe" and not stripe_secret_key:
        raise ConfigError("BILLING_PAYMENT_PROVIDER=stripe needs BILLING_STRIPE_SECRET_KEY")
    if provider == "sandbox" and stripe_secret_key:
        raise ConfigError(
            "BILLING_STRIPE_SECRET_KEY is set but BILLING_PAYMENT_PROVIDER=sandbox: unset one of them"
        )
    if provider == "sandbox" and database_url is not None and not _flag(env, "BILLING_ALLOW_SANDBOX"):
        raise ConfigError(
            "BILLING_PAYMENT_PROVIDER=sandbox with DATABASE_URL: the sandbox credits wallets without taking "
            "money; set BILLING_ALLOW_SANDBOX=1 if this database is not a real one"
        )
    return provider


def _previous_webhook_secret(env: Mapping[str, str], current: str) -> str:
    previous = _get(env, "BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS") or ""
    if previous and not previous.startswith("whsec_"):
        raise ConfigError("BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS must be a webhook signing secret (whsec_…)")
    if previous and not current:
        raise ConfigError(
            "BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS is set but BILLING_STRIPE_WEBHOOK_SECRET is not"
        )
    return previous


def _recharge_ceilings(env: Mapping[str, str], recharge_amount_max_nanos: int) -> RechargeCeilings:
    d = RechargeCeilings()
    max_charge = _usd_nanos(env, "BILLING_RECHARGE_MAX_CHARGE_USD", d.max_charge_nanos)
    max_daily = _usd_nanos(env, "BILLING_RECHARGE_MAX_DAILY_USD", d.max_daily_nanos)
    if max_charge < recharge_amount_max_nanos:
        raise ConfigError(
            "BILLING_RECHARGE_MAX_CHARGE_USD is below BILLING_RECHARGE_AMOUNT_MAX_USD "
            f"({_dollars(max_charge)} < {_dollars(recharge_amount_max_nanos)}): "
            "not even one recharge amount would fit"
        )
    if max_daily < max_charge:
        raise ConfigError(
            "BILLING_RECHARGE_MAX_DAILY_USD is below BILLING_RECHARGE_MAX_CHARGE_USD "
            f"({_dollars(max_daily)} < {_dollars(max_charge)})"
        )
    return RechargeCeilings(
        max_charge_nanos=max_charge,
        max_daily_nanos=max_daily,
        max_charges_per_hour=_int(
            env, "BILLING_RECHARGE_MAX_CHARGES_PER_HOUR", d.max_charges_per_hour, 1, 1000
        ),
        approval_minimum_balance_nanos=_usd_nanos(
            env, "BILLING_SETTINGS_APPROVAL_MINIMUM_BALANCE_USD", d.approval_minimum_balance_nanos
        ),
        approval_monthly_cap_nanos=_usd_nanos(
            env, "BILLING_SETTINGS_APPROVAL_MONTHLY_CAP_USD", d.approval_monthly_cap_nanos
        ),
    )


def load_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    pool_min = _int(env, "BILLING_DB_POOL_MIN_SIZE", 2, 1, 200)
    pool_max = _int(env, "BILLING_DB_POOL_MAX_SIZE", 10, 1, 200)
    if pool_max < pool_min:
        raise ConfigError(f"BILLING_DB_POOL_MAX_SIZE={pool_max} is below BILLING_DB_POOL_MIN_SIZE={pool_min}")
    grpc_port = _port(env, "BILLING_GRPC_PORT", 50051)
    metrics_port = _optional_port(env, "BILLING_METRICS_PORT", 9464)
    webhook_port = _port(env, "BILLING_WEBHOOK_PORT", 8080)
    ports = {"BILLING_GRPC_PORT": grpc_port, "BILLING_METRICS_PORT": metrics_port}
    ports["BILLING_WEBHOOK_PORT"] = webhook_port
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port:  # 0 and "off" never clash
            if port in seen:
                raise ConfigError(f"{name}={port} is already used by {seen[port]}")
            seen[port] = name
    stripe_secret_key, stripe_webhook_secret = _stripe(env)
    keepalive_time_s = _seconds(env, "BILLING_GRPC_KEEPALIVE_TIME_S", 60.0, 1.0, _DAY_S)
    keepalive_timeout_s = _seconds(env, "BILLING_GRPC_KEEPALIVE_TIMEOUT_S", 20.0, 1.0, 3600.0)
    if keepalive_timeout_s >= keepalive_time_s:
        raise ConfigError(
            "BILLING_GRPC_KEEPALIVE_TIMEOUT_S must be below BILLING_GRPC_KEEPALIVE_TIME_S "
            f"({keepalive_timeout_s:g} >= {keepalive_time_s:g})"
        )
    amount_min = _usd_nanos(env, "BILLING_RECHARGE_AMOUNT_MIN_USD", 5 * NANOS_PER_USD)
    amount_max = _usd_nanos(env, "BILLING_RECHARGE_AMOUNT_MAX_USD", 10_000 * NANOS_PER_USD)
    if amount_max < amount_min:
        raise ConfigError(
            "BILLING_RECHARGE_AMOUNT_MAX_USD is below BILLING_RECHARGE_AMOUNT_MIN_USD "
            f"({_dollars(amount_max)} < {_dollars(amount_min)})"
        )
    grpc_host = _get(env, "BILLING_GRPC_HOST") or "127.0.0.1"
    try:
        security = security_from_env(lambda name: _get(env, name), grpc_host)
    except SecurityConfigError as error:
        raise ConfigError(str(error)) from None
    database_url = _database_url(env)
    try:
        allowed_hosts = parse_allowed_hosts(_get(env, "BILLING_WEBHOOK_ALLOWED_HOSTS"))
    except HostListError as error:
        raise ConfigError(f"BILLING_WEBHOOK_ALLOWED_HOSTS: {error}") from None
    payment_provider = _payment_provider(env, database_url, stripe_secret_key)
    return Config(
        database_url=database_url,
        pgdata=Path(_get(env, "BILLING_PGDATA") or ".pgdata"),
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        db_pool_min_size=pool_min,
        db_pool_max_size=pool_max,
        log_format=_choice(env, "BILLING_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=_choice(env, "BILLING_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        shutdown_grace_s=_seconds(env, "BILLING_SHUTDOWN_GRACE_S", 10.0, 0.0, 300.0),
        health_probe_interval_s=_seconds(env, "BILLING_HEALTH_PROBE_INTERVAL_S", 1.0, 0.05, 60.0),
        metrics_port=metrics_port,
        webhook_port=webhook_port,
        stripe_secret_key=stripe_secret_key,
        stripe_webhook_secret=stripe_webhook_secret,
        stripe_api_base=_http_url(env, "BILLING_STRIPE_API_BASE") or "",
        recharge_sweep_interval_s=_seconds(env, "BILLING_RECHARGE_SWEEP_INTERVAL_S", 60.0, 0.05, 86400.0),
        recharge_retry_backoff_s=_backoff(
            env, "BILLING_RECHARGE_RETRY_BACKOFF_S", (3600.0, 21600.0, 86400.0)
        ),
        recharge_unknown_retry_backoff_s=_backoff(
            env, "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S", (5.0, 30.0, 120.0, 600.0, 1800.0)
        ),
        recharge_lease_s=_seconds(env, "BILLING_RECHARGE_LEASE_S", 60.0, 1.0, 86400.0),
        recharge_amount_min_nanos=amount_min,
        recharge_amount_max_nanos=amount_max,
        security=security,
        grpc_max_concurrent_streams=_int(env, "BILLING_GRPC_MAX_CONCURRENT_STREAMS", 512, 1, 100_000),
        grpc_keepalive_time_s=keepalive_time_s,
        grpc_keepalive_timeout_s=keepalive_timeout_s,
        grpc_min_ping_interval_s=_seconds(env, "BILLING_GRPC_MIN_PING_INTERVAL_S", 10.0, 1.0, 3600.0),
        grpc_max_connection_idle_s=_seconds(env, "BILLING_GRPC_MAX_CONNECTION_IDLE_S", 900.0, 1.0, _DAY_S),
        grpc_max_connection_age_s=_seconds(env, "BILLING_GRPC_MAX_CONNECTION_AGE_S", 1800.0, 1.0, _DAY_S),
        grpc_max_connection_age_grace_s=_seconds(
            env, "BILLING_GRPC_MAX_CONNECTION_AGE_GRACE_S", 300.0, 0.0, _DAY_S
        ),
        grpc_max_receive_message_bytes=_int(
            env, "BILLING_GRPC_MAX_RECEIVE_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024
        ),
        watch_streams_per_caller=_int(env, "BILLING_WATCH_STREAMS_PER_CALLER", 100, 1, 100_000),
        watch_stream_buffer_events=_int(
            env, "BILLING_WATCH_STREAM_BUFFER_EVENTS", 2000, MIN_STREAM_BUFFER_EVENTS, 1_000_000
        ),
        max_concurrent_statements=_int(env, "BILLING_MAX_CONCURRENT_STATEMENTS", 2, 1, 1000),
        max_concurrent_exports=_int(env, "BILLING_MAX_CONCURRENT_EXPORTS", 2, 1, 1000),
        max_concurrent_summaries=_int(env, "BILLING_MAX_CONCURRENT_SUMMARIES", 2, 1, 1000),
        db_acquire_timeout_s=_seconds(env, "BILLING_DB_ACQUIRE_TIMEOUT_S", 5.0, 0.01, 300.0),
        db_statement_timeout_s=_seconds(env, "BILLING_DB_STATEMENT_TIMEOUT_S", 30.0, 0.01, 3600.0),
        default_deadline_s=_seconds(env, "BILLING_DEFAULT_DEADLINE_S", 30.0, 0.01, 3600.0),
        grpc_workers=grpc_workers(_get(env, "BILLING_GRPC_WORKERS")),
        usage_batch_max=_int(env, "BILLING_USAGE_BATCH_MAX", 1000, 1, 10_000),
        usage_queue_max=_int(env, "BILLING_USAGE_QUEUE_MAX", 20_000, 1000, 1_000_000),
        usage_flushers=_int(env, "BILLING_USAGE_FLUSHERS", 2, 1, 16),
        # ---- payments, ceilings and listeners ----
        payment_provider=payment_provider,
        allow_sandbox=_flag(env, "BILLING_ALLOW_SANDBOX"),
        stripe_webhook_secret_previous=_previous_webhook_secret(env, stripe_webhook_secret),
        recharge_ceilings=_recharge_ceilings(env, amount_max),
        metrics_host=_get(env, "BILLING_METRICS_HOST") or "127.0.0.1",
        webhook_host=_get(env, "BILLING_WEBHOOK_HOST") or "127.0.0.1",
        webhook_allowed_hosts=allowed_hosts,
        webhook_timeout_s=_seconds(env, "BILLING_WEBHOOK_TIMEOUT_S", 10.0, 0.05, 60.0),
        webhook_retry_for_s=_seconds(env, "BILLING_WEBHOOK_RETRY_FOR_S", 72 * 3600.0, 1.0, 30 * _DAY_S),
        webhook_backoff_base_s=_seconds(env, "BILLING_WEBHOOK_BACKOFF_BASE_S", 30.0, 0.01, 3600.0),
    )
