"""Configuration: every rule refuses a bad value with one line naming the variable."""

from __future__ import annotations

import pytest

from service.config import ConfigError, load_config
from service.domain.money import usd

KEY = "sk_test_" + "a1B2c3D4e5F6g7H8"
HOOK_SECRET = "whsec_" + "Z9y8X7w6V5"


def _error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_describe_a_local_service_without_stripe() -> None:
    config = load_config({})
    assert (config.grpc_port, config.metrics_port, config.webhook_port) == (50051, 9464, 8080)
    assert config.database_url is None
    assert config.stripe_secret_key == "" and config.stripe_webhook_secret == ""
    assert config.recharge_retry_backoff_s == (3600.0, 21600.0, 86400.0)
    assert config.recharge_amount_min_nanos == usd(5)
    assert config.recharge_amount_max_nanos == usd(10_000)


def test_every_setting_is_read_from_its_variable() -> None:
    config = load_config(
        {
            "DATABASE_URL": "postgresql://billing:pw@db:5432/billing",
            "BILLING_GRPC_PORT": "6000",
            "BILLING_METRICS_PORT": "6001",
            "BILLING_WEBHOOK_PORT": "6002",
            "BILLING_PAYMENT_PROVIDER": "stripe",
            "BILLING_STRIPE_SECRET_KEY": KEY,
            "BILLING_STRIPE_WEBHOOK_SECRET": HOOK_SECRET,
            "BILLING_STRIPE_API_BASE": "http://127.0.0.1:12111/",
            "BILLING_RECHARGE_SWEEP_INTERVAL_S": "2.5",
            "BILLING_RECHARGE_RETRY_BACKOFF_S": "60, 600,600",
            "BILLING_RECHARGE_LEASE_S": "90",
            "BILLING_RECHARGE_AMOUNT_MIN_USD": "10",
            "BILLING_RECHARGE_AMOUNT_MAX_USD": "2500.55",
            "BILLING_SHUTDOWN_GRACE_S": "3",
        }
    )
    assert config.database_url == "postgresql://billing:pw@db:5432/billing"
    assert (config.grpc_port, config.metrics_port, config.webhook_port) == (6000, 6001, 6002)
    assert (config.stripe_secret_key, config.stripe_webhook_secret) == (KEY, HOOK_SECRET)
    assert config.stripe_api_base == "http://127.0.0.1:12111"
    assert config.recharge_sweep_interval_s == 2.5
    assert config.recharge_retry_backoff_s == (60.0, 600.0, 600.0)
    assert config.recharge_lease_s == 90.0
    assert config.recharge_amount_min_nanos == usd(10)
    assert config.recharge_amount_max_nanos == usd(2500, 550_000_000)
    assert config.shutdown_grace_s == 3.0


def test_amount_bounds_are_exact_decimals_not_floats() -> None:
    # 0.29 is 0.28999999999999998 as a float; parsed exactly it is 290_000_000 nanos.
    config = load_config(
        {"BILLING_RECHARGE_AMOUNT_MIN_USD": "0.29", "BILLING_RECHARGE_AMOUNT_MAX_USD": "1e3"}
    )
    assert config.recharge_amount_min_nanos == 290_000_000
    assert config.recharge_amount_max_nanos == usd(1000)


def test_secrets_never_appear_in_the_config_repr() -> None:
    config = load_config(
        {
            "BILLING_PAYMENT_PROVIDER": "stripe",
            "BILLING_STRIPE_SECRET_KEY": KEY,
            "BILLING_STRIPE_WEBHOOK_SECRET": HOOK_SECRET,
            "BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS": HOOK_SECRET + "old",
            "DATABASE_URL": "postgresql://u:hunter2@db/billing",
        }
    )
    shown = repr(config)
    assert KEY not in shown and HOOK_SECRET not in shown and "hunter2" not in shown
    assert config.stripe_webhook_secret_previous == HOOK_SECRET + "old"


def test_metrics_can_be_switched_off_and_empty_values_mean_unset() -> None:
    config = load_config(
        {"BILLING_METRICS_PORT": "off", "BILLING_STRIPE_SECRET_KEY": "", "DATABASE_URL": " "}
    )
    assert config.metrics_port is None
    assert config.stripe_secret_key == "" and config.database_url is None


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"DATABASE_URL": "mysql://db/billing"}, "DATABASE_URL", "postgresql://"),
        ({"DATABASE_URL": "postgresql://db:port/billing"}, "DATABASE_URL", "malformed port"),
        ({"DATABASE_URL": "postgresql://db:5432"}, "DATABASE_URL", "names no database"),
        ({"BILLING_GRPC_PORT": "70000"}, "BILLING_GRPC_PORT", "out of range"),
        ({"BILLING_GRPC_PORT": "http"}, "BILLING_GRPC_PORT", "not a port number"),
        ({"BILLING_METRICS_PORT": "-1"}, "BILLING_METRICS_PORT", "out of range"),
        ({"BILLING_WEBHOOK_PORT": "65536"}, "BILLING_WEBHOOK_PORT", "out of range"),
        ({"BILLING_WEBHOOK_PORT": "9464"}, "BILLING_WEBHOOK_PORT", "already used by BILLING_METRICS_PORT"),
        (
            {"BILLING_STRIPE_SECRET_KEY": KEY},
            "BILLING_STRIPE_WEBHOOK_SECRET",
            "missing while BILLING_STRIPE_SECRET_KEY is set",
        ),
        (
            {"BILLING_STRIPE_WEBHOOK_SECRET": HOOK_SECRET},
            "BILLING_STRIPE_WEBHOOK_SECRET",
            "BILLING_STRIPE_SECRET_KEY is not",
        ),
        (
            {"BILLING_STRIPE_SECRET_KEY": "pk_test_123", "BILLING_STRIPE_WEBHOOK_SECRET": HOOK_SECRET},
            "BILLING_STRIPE_SECRET_KEY",
            "sk_",
        ),
        (
            {"BILLING_STRIPE_SECRET_KEY": KEY, "BILLING_STRIPE_WEBHOOK_SECRET": "secret"},
            "BILLING_STRIPE_WEBHOOK_SECRET",
            "whsec_",
        ),
        ({"BILLING_STRIPE_API_BASE": "localhost:12111"}, "BILLING_STRIPE_API_BASE", "not an http(s) URL"),
        ({"BILLING_LOG_FORMAT": "xml"}, "BILLING_LOG_FORMAT", "must be one of"),
        ({"BILLING_LOG_LEVEL": "loud"}, "BILLING_LOG_LEVEL", "must be one of"),
        ({"BILLING_EVENT_LOOP": "trio"}, "BILLING_EVENT_LOOP", "must be one of"),
        ({"BILLING_SHUTDOWN_GRACE_S": "soon"}, "BILLING_SHUTDOWN_GRACE_S", "not a number of seconds"),
        ({"BILLING_SHUTDOWN_GRACE_S": "nan"}, "BILLING_SHUTDOWN_GRACE_S", "out of range"),
        ({"BILLING_DB_POOL_MAX_SIZE": "1"}, "BILLING_DB_POOL_MAX_SIZE", "below BILLING_DB_POOL_MIN_SIZE"),
        ({"BILLING_RECHARGE_SWEEP_INTERVAL_S": "0"}, "BILLING_RECHARGE_SWEEP_INTERVAL_S", "out of range"),
        ({"BILLING_RECHARGE_LEASE_S": "0.5"}, "BILLING_RECHARGE_LEASE_S", "out of range"),
        ({"BILLING_RECHARGE_RETRY_BACKOFF_S": "3600,x"}, "BILLING_RECHARGE_RETRY_BACKOFF_S", "not a number"),
        ({"BILLING_RECHARGE_RETRY_BACKOFF_S": "3600,60"}, "BILLING_RECHARGE_RETRY_BACKOFF_S", "not decrease"),
        (
            {"BILLING_RECHARGE_AMOUNT_MIN_USD": "five"},
            "BILLING_RECHARGE_AMOUNT_MIN_USD",
            "not a dollar amount",
        ),
        ({"BILLING_RECHARGE_AMOUNT_MIN_USD": "-5"}, "BILLING_RECHARGE_AMOUNT_MIN_USD", "positive"),
        ({"BILLING_RECHARGE_AMOUNT_MIN_USD": "Infinity"}, "BILLING_RECHARGE_AMOUNT_MIN_USD", "positive"),
        (
            {"BILLING_RECHARGE_AMOUNT_MIN_USD": "5.001"},
            "BILLING_RECHARGE_AMOUNT_MIN_USD",
            "must be whole cents",
        ),
        ({"BILLING_RECHARGE_AMOUNT_MAX_USD": "4"}, "BILLING_RECHARGE_AMOUNT_MAX_USD", "below"),
    ],
)
def test_a_bad_value_names_the_variable(env: dict[str, str], variable: str, says: str) -> None:
    message = _error(env)
    assert message.startswith(variable) or variable in message
    assert says in message


def test_messages_about_stripe_secrets_do_not_repeat_them() -> None:
    wrong_kind = "pk_live_" + "Q1w2E3r4T5y6"
    message = _error({"BILLING_STRIPE_SECRET_KEY": wrong_kind, "BILLING_STRIPE_WEBHOOK_SECRET": HOOK_SECRET})
    assert wrong_kind not in message
    message = _error({"BILLING_STRIPE_SECRET_KEY": KEY})
    assert KEY not in message


def test_limits_have_safe_defaults() -> None:
    config = load_config({})
    assert config.watch_streams_per_caller == 100
    assert config.grpc_max_concurrent_streams == 512
    assert (config.grpc_keepalive_time_s, config.grpc_keepalive_timeout_s) == (60.0, 20.0)
    assert config.grpc_max_connection_age_s == 1800.0
    assert config.grpc_max_receive_message_bytes == 4 * 1024 * 1024
    assert (config.max_concurrent_statements, config.max_concurrent_exports) == (2, 2)
    assert config.max_concurrent_summaries == 2
    # Heavy reads together leave most of the pool to RecordUsage.
    heavy = config.max_concurrent_statements + config.max_concurrent_exports + config.max_concurrent_summaries
    assert heavy < config.db_pool_max_size
    assert (config.db_acquire_timeout_s, config.db_statement_timeout_s, config.default_deadline_s) == (
        5,
        30,
        30,
    )
    assert config.watch_stream_buffer_events == 2000


def test_limits_are_read_from_their_variables() -> None:
    config = load_config(
        {
            "BILLING_WATCH_STREAMS_PER_CALLER": "7",
            "BILLING_WATCH_STREAM_BUFFER_EVENTS": "600",
            "BILLING_MAX_CONCURRENT_STATEMENTS": "3",
            "BILLING_MAX_CONCURRENT_EXPORTS": "1",
            "BILLING_MAX_CONCURRENT_SUMMARIES": "4",
            "BILLING_DB_ACQUIRE_TIMEOUT_S": "0.5",
            "BILLING_DB_STATEMENT_TIMEOUT_S": "12",
            "BILLING_DEFAULT_DEADLINE_S": "8",
        }
    )
    assert (config.watch_streams_per_caller, config.watch_stream_buffer_events) == (7, 600)
    assert (config.max_concurrent_statements, config.max_concurrent_exports) == (3, 1)
    assert config.max_concurrent_summaries == 4
    assert (config.db_acquire_timeout_s, config.db_statement_timeout_s, config.default_deadline_s) == (
        0.5,
        12,
        8,
    )


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"BILLING_WATCH_STREAMS_PER_CALLER": "0"}, "BILLING_WATCH_STREAMS_PER_CALLER", "out of range"),
        ({"BILLING_WATCH_STREAM_BUFFER_EVENTS": "10"}, "BILLING_WATCH_STREAM_BUFFER_EVENTS", "out of range"),
        (
            {"BILLING_GRPC_MAX_CONCURRENT_STREAMS": "many"},
            "BILLING_GRPC_MAX_CONCURRENT_STREAMS",
            "whole number",
        ),
        ({"BILLING_DB_ACQUIRE_TIMEOUT_S": "nan"}, "BILLING_DB_ACQUIRE_TIMEOUT_S", "out of range"),
        ({"BILLING_DEFAULT_DEADLINE_S": "0"}, "BILLING_DEFAULT_DEADLINE_S", "out of range"),
        (
            {"BILLING_GRPC_KEEPALIVE_TIME_S": "10", "BILLING_GRPC_KEEPALIVE_TIMEOUT_S": "10"},
            "BILLING_GRPC_KEEPALIVE_TIMEOUT_S",
            "below",
        ),
    ],
)
def test_a_bad_limit_names_the_variable(env: dict[str, str], variable: str, says: str) -> None:
    message = _error(env)
    assert variable in message and says in message


def test_metrics_and_webhooks_listen_on_loopback_unless_told_otherwise() -> None:
    # Not on the gRPC host: opening gRPC to the network must not open the metrics and webhooks with it.
    config = load_config({"BILLING_GRPC_HOST": "0.0.0.0", "BILLING_AUTH": "required"})
    assert (config.grpc_host, config.metrics_host, config.webhook_host) == (
        "0.0.0.0",
        "127.0.0.1",
        "127.0.0.1",
    )
    config = load_config({"BILLING_METRICS_HOST": "10.0.0.5", "BILLING_WEBHOOK_HOST": "0.0.0.0"})
    assert (config.metrics_host, config.webhook_host) == ("10.0.0.5", "0.0.0.0")


def test_recharge_ceilings_are_read_and_checked_against_each_other() -> None:
    config = load_config(
        {
            "BILLING_RECHARGE_MAX_CHARGE_USD": "2500.00",
            "BILLING_RECHARGE_AMOUNT_MAX_USD": "2000",
            "BILLING_RECHARGE_MAX_DAILY_USD": "5000",
            "BILLING_RECHARGE_MAX_CHARGES_PER_HOUR": "4",
            "BILLING_SETTINGS_APPROVAL_MINIMUM_BALANCE_USD": "500",
            "BILLING_SETTINGS_APPROVAL_MONTHLY_CAP_USD": "20000",
        }
    )
    c = config.recharge_ceilings
    assert (c.max_charge_nanos, c.max_daily_nanos, c.max_charges_per_hour) == (usd(2500), usd(5000), 4)
    assert (c.approval_minimum_balance_nanos, c.approval_monthly_cap_nanos) == (usd(500), usd(20_000))
    defaults = load_config({}).recharge_ceilings
    assert (defaults.max_charge_nanos, defaults.max_daily_nanos) == (usd(10_000), usd(20_000))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BILLING_RECHARGE_MAX_CHARGE_USD": "5000"}, "below BILLING_RECHARGE_AMOUNT_MAX_USD"),
        ({"BILLING_RECHARGE_MAX_DAILY_USD": "9999.99"}, "below BILLING_RECHARGE_MAX_CHARGE_USD"),
        ({"BILLING_RECHARGE_MAX_CHARGE_USD": "0"}, "positive dollar amount"),
        ({"BILLING_RECHARGE_MAX_CHARGES_PER_HOUR": "0"}, "out of range"),
        ({"BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS": "whsec_x"}, "BILLING_STRIPE_WEBHOOK_SECRET is not"),
    ],
)
def test_bad_ceilings_stop_the_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert message in str(caught.value)
