"""Configuration, from environment variables only, validated once at start.

Every variable is listed in README.md ("Configuration"). A bad value stops the process with one line
that names the variable and what is wrong with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

NANOS_PER_USD = 1_000_000_000  # as service.domain.money; config stays free of domain imports
NANOS_PER_CENT = 10_000_000


class ConfigError(ValueError):
    """One bad setting; str() is the one-line message shown to the operator."""


@dataclass(frozen=True)
class Config:
    database_url: str | None
    pgdata: Path
    grpc_host: str
    grpc_port: int
    db_pool_min_size: int
    db_pool_max_size: int
    log_format: str
    log_level: str
    shutdown_grace_s: float
    health_probe_interval_s: float
    # Settings bounds and the payment provider (issue 4). Defaults so that code building a Config by
    # hand keeps working.
    recharge_amount_min_nanos: int = 5 * NANOS_PER_USD
    recharge_amount_max_nanos: int = 10_000 * NANOS_PER_USD
    # Empty: the sandbox payment provider is used and no real money moves.
    stripe_secret_key: str = field(default="", repr=False)
    stripe_webhook_secret: str = field(default="", repr=False)
    # Only for tests and Stripe-compatible fakes; empty means Stripe's own API.
    stripe_api_base: str = ""
    # Auto-recharge (README, "Auto-recharge").
    webhook_port: int = 8081
    recharge_sweep_interval_s: float = 60.0
    # Waits before a new attempt after each soft decline; after the last one, auto-recharge pauses.
    recharge_retry_backoff_s: tuple[float, ...] = (3600.0, 21600.0, 86400.0)
    # Waits before retrying the same attempt (same idempotency key) after an unknown outcome, and
    # between polls of a processing PaymentIntent; the last value repeats.
    recharge_unknown_retry_backoff_s: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0)
    recharge_lease_s: float = 60.0


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={port} is out of range (0-65535; 0 picks a free port)")
    return port


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range ({low}-{high})")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, str(default))
    try:
        value = float(raw)  # a duration, not money: floats are fine here
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range ({low}-{high} seconds)")
    return value


def _seconds_list(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a comma-separated list of seconds") from None
    if not values or any(not 0 <= v <= 30 * 86400 for v in values):
        raise ConfigError(f"{name}={raw!r} needs one or more values, each 0-2592000 seconds")
    return values


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _usd_nanos(env: Mapping[str, str], name: str, default_nanos: int) -> int:
    """A dollar amount parsed as an exact decimal (never a float), whole cents, in nano-USD."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default_nanos
    try:
        amount = Decimal(raw.strip().removeprefix("$"))
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r} is not a dollar amount (e.g. 5.00)") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive dollar amount")
    if amount != amount.quantize(Decimal("0.01")):
        raise ConfigError(f"{name}={raw!r} must be whole cents (at most two decimal places)")
    nanos = int(amount * NANOS_PER_USD)
    if nanos > 1_000_000 * NANOS_PER_USD:
        raise ConfigError(f"{name}={raw!r} is above $1,000,000")
    return nanos


def _dollars(amount_nanos: int) -> str:
    cents = amount_nanos // NANOS_PER_CENT
    return f"${cents // 100}.{cents % 100:02d}"


def _database_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
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


def load_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    pool_min = _int(env, "BILLING_DB_POOL_MIN_SIZE", 2, 1, 200)
    pool_max = _int(env, "BILLING_DB_POOL_MAX_SIZE", 10, 1, 200)
    if pool_max < pool_min:
        raise ConfigError(f"BILLING_DB_POOL_MAX_SIZE={pool_max} is below BILLING_DB_POOL_MIN_SIZE={pool_min}")
    recharge_min = _usd_nanos(env, "BILLING_RECHARGE_AMOUNT_MIN_USD", 5 * NANOS_PER_USD)
    recharge_max = _usd_nanos(env, "BILLING_RECHARGE_AMOUNT_MAX_USD", 10_000 * NANOS_PER_USD)
    if recharge_max < recharge_min:
        raise ConfigError(
            "BILLING_RECHARGE_AMOUNT_MAX_USD is below BILLING_RECHARGE_AMOUNT_MIN_USD "
            f"({_dollars(recharge_max)} < {_dollars(recharge_min)})"
        )
    return Config(
        database_url=_database_url(env),
        pgdata=Path(env.get("BILLING_PGDATA", ".pgdata")),
        grpc_host=env.get("BILLING_GRPC_HOST", "127.0.0.1"),
        grpc_port=_port(env, "BILLING_GRPC_PORT", 50051),
        db_pool_min_size=pool_min,
        db_pool_max_size=pool_max,
        log_format=_choice(env, "BILLING_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=_choice(env, "BILLING_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        shutdown_grace_s=_seconds(env, "BILLING_SHUTDOWN_GRACE_S", 10.0, 0.0, 300.0),
        health_probe_interval_s=_seconds(env, "BILLING_HEALTH_PROBE_INTERVAL_S", 1.0, 0.05, 60.0),
        recharge_amount_min_nanos=recharge_min,
        recharge_amount_max_nanos=recharge_max,
        stripe_secret_key=env.get("BILLING_STRIPE_SECRET_KEY", "").strip(),
        stripe_webhook_secret=env.get("BILLING_STRIPE_WEBHOOK_SECRET", "").strip(),
        stripe_api_base=env.get("BILLING_STRIPE_API_BASE", "").strip().rstrip("/"),
        webhook_port=_port(env, "BILLING_WEBHOOK_PORT", 8081),
        recharge_sweep_interval_s=_seconds(env, "BILLING_RECHARGE_SWEEP_INTERVAL_S", 60.0, 0.05, 86400.0),
        recharge_retry_backoff_s=_seconds_list(
            env, "BILLING_RECHARGE_RETRY_BACKOFF_S", (3600.0, 21600.0, 86400.0)
        ),
        recharge_unknown_retry_backoff_s=_seconds_list(
            env, "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S", (5.0, 30.0, 120.0, 600.0, 1800.0)
        ),
        recharge_lease_s=_seconds(env, "BILLING_RECHARGE_LEASE_S", 60.0, 0.5, 3600.0),
    )
