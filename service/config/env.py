"""Reading one environment variable: each parser names the variable and what is wrong in one line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from urllib.parse import urlsplit

from service.config.model import ConfigError
from service.domain.money import NANOS_PER_CENT, NANOS_PER_USD


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, with an empty or blank value read as unset (compose passes `VAR=`)."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env_text(env, name) or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={port} is out of range (0-65535; 0 picks a free port)")
    return port


def optional_port(env: Mapping[str, str], name: str, default: int) -> int | None:
    raw = env_text(env, name)
    if raw is not None and raw.lower() == "off":
        return None
    return port(env, name, default)


def whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env_text(env, name) or str(default)
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


def seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _one_duration(name, env_text(env, name) or str(default), low, high)


def backoff(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env_text(env, name)
    if raw is None:
        return default
    steps = tuple(_one_duration(name, part.strip(), 0.01, 30 * 86400.0) for part in raw.split(","))
    if any(later < earlier for earlier, later in pairwise(steps)):
        raise ConfigError(f"{name}={raw!r} must not decrease (e.g. 3600,21600,86400)")
    return steps


def usd_nanos(env: Mapping[str, str], name: str, default_nanos: int) -> int:
    """A dollar amount parsed as an exact decimal (never a float), whole cents, in nano-USD."""
    raw = env_text(env, name)
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


def dollars(amount_nanos: int) -> str:
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


def choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (env_text(env, name) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def database_url(env: Mapping[str, str]) -> str | None:
    raw = env_text(env, "DATABASE_URL")
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


def http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env_text(env, name)
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


def flag(env: Mapping[str, str], name: str) -> bool:
    raw = env_text(env, name)
    if raw is None or raw == "0":
        return False
    if raw == "1":
        return True
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")
