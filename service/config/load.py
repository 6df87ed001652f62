"""load_config(): every variable, read and checked once at start."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from service.config.charging import payment_provider, previous_webhook_secret, recharge_ceilings, stripe_keys
from service.config.env import (
    backoff,
    choice,
    database_url,
    dollars,
    env_text,
    flag,
    grpc_workers,
    http_url,
    optional_port,
    port,
    seconds,
    usd_nanos,
    whole_number,
)
from service.config.model import MIN_STREAM_BUFFER_EVENTS, Config, ConfigError
from service.domain.money import NANOS_PER_USD
from service.domain.webhook_hosts import AllowedHosts, HostListError, parse_allowed_hosts
from service.security_config import SecurityConfigError, security_from_env

_DAY_S = 86400.0


def event_loop(env: Mapping[str, str]) -> str:
    chosen = choice(env, "BILLING_EVENT_LOOP", "auto", ("auto", "uvloop", "asyncio"))
    if chosen == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("BILLING_EVENT_LOOP=uvloop, but uvloop is not installed here (auto falls back)")
    return chosen


def load_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    pool_min = whole_number(env, "BILLING_DB_POOL_MIN_SIZE", 2, 1, 200)
    pool_max = whole_number(env, "BILLING_DB_POOL_MAX_SIZE", 10, 1, 200)
    if pool_max < pool_min:
        raise ConfigError(f"BILLING_DB_POOL_MAX_SIZE={pool_max} is below BILLING_DB_POOL_MIN_SIZE={pool_min}")
    grpc_port = port(env, "BILLING_GRPC_PORT", 50051)
    metrics_port = optional_port(env, "BILLING_METRICS_PORT", 9464)
    webhook_port = port(env, "BILLING_WEBHOOK_PORT", 8080)
    ports = {"BILLING_GRPC_PORT": grpc_port, "BILLING_METRICS_PORT": metrics_port}
    ports["BILLING_WEBHOOK_PORT"] = webhook_port
    seen: dict[int, str] = {}
    for name, number in ports.items():
        if number:  # 0 and "off" never clash
            if number in seen:
                raise ConfigError(f"{name}={number} is already used by {seen[number]}")
            seen[number] = name
    stripe_secret_key, stripe_webhook_secret = stripe_keys(env)
    keepalive_time_s = seconds(env, "BILLING_GRPC_KEEPALIVE_TIME_S", 60.0, 1.0, _DAY_S)
    keepalive_timeout_s = seconds(env, "BILLING_GRPC_KEEPALIVE_TIMEOUT_S", 20.0, 1.0, 3600.0)
    if keepalive_timeout_s >= keepalive_time_s:
        raise ConfigError(
            "BILLING_GRPC_KEEPALIVE_TIMEOUT_S must be below BILLING_GRPC_KEEPALIVE_TIME_S "
            f"({keepalive_timeout_s:g} >= {keepalive_time_s:g})"
        )
    amount_min = usd_nanos(env, "BILLING_RECHARGE_AMOUNT_MIN_USD", 5 * NANOS_PER_USD)
    amount_max = usd_nanos(env, "BILLING_RECHARGE_AMOUNT_MAX_USD", 10_000 * NANOS_PER_USD)
    if amount_max < amount_min:
        raise ConfigError(
            "BILLING_RECHARGE_AMOUNT_MAX_USD is below BILLING_RECHARGE_AMOUNT_MIN_USD "
            f"({dollars(amount_max)} < {dollars(amount_min)})"
        )
    grpc_host = env_text(env, "BILLING_GRPC_HOST") or "127.0.0.1"
    try:
        security = security_from_env(lambda name: env_text(env, name), grpc_host)
    except SecurityConfigError as error:
        raise ConfigError(str(error)) from None
    db_url = database_url(env)
    provider = payment_provider(env, db_url, stripe_secret_key)
    return Config(
        database_url=db_url,
        pgdata=Path(env_text(env, "BILLING_PGDATA") or ".pgdata"),
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        db_pool_min_size=pool_min,
        db_pool_max_size=pool_max,
        log_format=choice(env, "BILLING_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=choice(env, "BILLING_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        event_loop=event_loop(env),
        shutdown_grace_s=seconds(env, "BILLING_SHUTDOWN_GRACE_S", 10.0, 0.0, 300.0),
        health_probe_interval_s=seconds(env, "BILLING_HEALTH_PROBE_INTERVAL_S", 1.0, 0.05, 60.0),
        metrics_port=metrics_port,
        webhook_port=webhook_port,
        stripe_secret_key=stripe_secret_key,
        stripe_webhook_secret=stripe_webhook_secret,
        stripe_api_base=http_url(env, "BILLING_STRIPE_API_BASE") or "",
        recharge_sweep_interval_s=seconds(env, "BILLING_RECHARGE_SWEEP_INTERVAL_S", 60.0, 0.05, 86400.0),
        recharge_retry_backoff_s=backoff(env, "BILLING_RECHARGE_RETRY_BACKOFF_S", (3600.0, 21600.0, 86400.0)),
        recharge_unknown_retry_backoff_s=backoff(
            env, "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S", (5.0, 30.0, 120.0, 600.0, 1800.0)
        ),
        recharge_lease_s=seconds(env, "BILLING_RECHARGE_LEASE_S", 60.0, 1.0, 86400.0),
        recharge_amount_min_nanos=amount_min,
        recharge_amount_max_nanos=amount_max,
        security=security,
        grpc_max_concurrent_streams=whole_number(env, "BILLING_GRPC_MAX_CONCURRENT_STREAMS", 512, 1, 100_000),
        grpc_keepalive_time_s=keepalive_time_s,
        grpc_keepalive_timeout_s=keepalive_timeout_s,
        grpc_min_ping_interval_s=seconds(env, "BILLING_GRPC_MIN_PING_INTERVAL_S", 10.0, 1.0, 3600.0),
        grpc_max_connection_idle_s=seconds(env, "BILLING_GRPC_MAX_CONNECTION_IDLE_S", 900.0, 1.0, _DAY_S),
        grpc_max_connection_age_s=seconds(env, "BILLING_GRPC_MAX_CONNECTION_AGE_S", 1800.0, 1.0, _DAY_S),
        grpc_max_connection_age_grace_s=seconds(
            env, "BILLING_GRPC_MAX_CONNECTION_AGE_GRACE_S", 300.0, 0.0, _DAY_S
        ),
        grpc_max_receive_message_bytes=whole_number(
            env, "BILLING_GRPC_MAX_RECEIVE_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024
        ),
        watch_streams_per_caller=whole_number(env, "BILLING_WATCH_STREAMS_PER_CALLER", 100, 1, 100_000),
        watch_stream_buffer_events=whole_number(
            env, "BILLING_WATCH_STREAM_BUFFER_EVENTS", 2000, MIN_STREAM_BUFFER_EVENTS, 1_000_000
        ),
        max_concurrent_statements=whole_number(env, "BILLING_MAX_CONCURRENT_STATEMENTS", 2, 1, 1000),
        max_concurrent_exports=whole_number(env, "BILLING_MAX_CONCURRENT_EXPORTS", 2, 1, 1000),
        max_concurrent_summaries=whole_number(env, "BILLING_MAX_CONCURRENT_SUMMARIES", 2, 1, 1000),
        db_acquire_timeout_s=seconds(env, "BILLING_DB_ACQUIRE_TIMEOUT_S", 5.0, 0.01, 300.0),
        db_statement_timeout_s=seconds(env, "BILLING_DB_STATEMENT_TIMEOUT_S", 30.0, 0.01, 3600.0),
        default_deadline_s=seconds(env, "BILLING_DEFAULT_DEADLINE_S", 30.0, 0.01, 3600.0),
        grpc_workers=grpc_workers(env_text(env, "BILLING_GRPC_WORKERS")),
        usage_batch_max=whole_number(env, "BILLING_USAGE_BATCH_MAX", 1000, 1, 10_000),
        usage_queue_max=whole_number(env, "BILLING_USAGE_QUEUE_MAX", 20_000, 1000, 1_000_000),
        usage_flushers=whole_number(env, "BILLING_USAGE_FLUSHERS", 1, 1, 16),
        # ---- payments, ceilings and listeners ----
        payment_provider=provider,
        allow_sandbox=flag(env, "BILLING_ALLOW_SANDBOX"),
        stripe_webhook_secret_previous=previous_webhook_secret(env, stripe_webhook_secret),
        recharge_ceilings=recharge_ceilings(env, amount_max),
        metrics_host=env_text(env, "BILLING_METRICS_HOST") or "127.0.0.1",
        webhook_host=env_text(env, "BILLING_WEBHOOK_HOST") or "127.0.0.1",
        webhook_allowed_hosts=_allowed_hosts(env),
        webhook_timeout_s=seconds(env, "BILLING_WEBHOOK_TIMEOUT_S", 10.0, 0.05, 60.0),
        webhook_retry_for_s=seconds(env, "BILLING_WEBHOOK_RETRY_FOR_S", 72 * 3600.0, 1.0, 30 * _DAY_S),
        webhook_backoff_base_s=seconds(env, "BILLING_WEBHOOK_BACKOFF_BASE_S", 30.0, 0.01, 3600.0),
    )


def _allowed_hosts(env: Mapping[str, str]) -> AllowedHosts:
    try:
        return parse_allowed_hosts(env_text(env, "BILLING_WEBHOOK_ALLOWED_HOSTS"))
    except HostListError as error:
        raise ConfigError(f"BILLING_WEBHOOK_ALLOWED_HOSTS: {error}") from None
