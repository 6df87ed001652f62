"""The settings that move money: the payment provider, Stripe's secrets, and the charge ceilings."""

from __future__ import annotations

from collections.abc import Mapping

from service.config.env import dollars, env_text, flag, usd_nanos, whole_number
from service.config.model import ConfigError, RechargeCeilings


def stripe_keys(env: Mapping[str, str]) -> tuple[str, str]:
    key = env_text(env, "BILLING_STRIPE_SECRET_KEY") or ""
    secret = env_text(env, "BILLING_STRIPE_WEBHOOK_SECRET") or ""
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


def payment_provider(env: Mapping[str, str], database_url: str | None, stripe_secret_key: str) -> str:
    """The provider the operator chose. Never guessed: only the embedded database implies the sandbox."""
    raw = env_text(env, "BILLING_PAYMENT_PROVIDER")
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
    if provider == "sandbox" and database_url is not None and not flag(env, "BILLING_ALLOW_SANDBOX"):
        raise ConfigError(
            "BILLING_PAYMENT_PROVIDER=sandbox with DATABASE_URL: the sandbox credits wallets without taking "
            "money; set BILLING_ALLOW_SANDBOX=1 if this database is not a real one"
        )
    return provider


def previous_webhook_secret(env: Mapping[str, str], current: str) -> str:
    previous = env_text(env, "BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS") or ""
    if previous and not previous.startswith("whsec_"):
        raise ConfigError("BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS must be a webhook signing secret (whsec_…)")
    if previous and not current:
        raise ConfigError(
            "BILLING_STRIPE_WEBHOOK_SECRET_PREVIOUS is set but BILLING_STRIPE_WEBHOOK_SECRET is not"
        )
    return previous


def recharge_ceilings(env: Mapping[str, str], recharge_amount_max_nanos: int) -> RechargeCeilings:
    d = RechargeCeilings()
    max_charge = usd_nanos(env, "BILLING_RECHARGE_MAX_CHARGE_USD", d.max_charge_nanos)
    max_daily = usd_nanos(env, "BILLING_RECHARGE_MAX_DAILY_USD", d.max_daily_nanos)
    if max_charge < recharge_amount_max_nanos:
        raise ConfigError(
            "BILLING_RECHARGE_MAX_CHARGE_USD is below BILLING_RECHARGE_AMOUNT_MAX_USD "
            f"({dollars(max_charge)} < {dollars(recharge_amount_max_nanos)}): "
            "not even one recharge amount would fit"
        )
    if max_daily < max_charge:
        raise ConfigError(
            "BILLING_RECHARGE_MAX_DAILY_USD is below BILLING_RECHARGE_MAX_CHARGE_USD "
            f"({dollars(max_daily)} < {dollars(max_charge)})"
        )
    return RechargeCeilings(
        max_charge_nanos=max_charge,
        max_daily_nanos=max_daily,
        max_charges_per_hour=whole_number(
            env, "BILLING_RECHARGE_MAX_CHARGES_PER_HOUR", d.max_charges_per_hour, 1, 1000
        ),
        approval_minimum_balance_nanos=usd_nanos(
            env, "BILLING_SETTINGS_APPROVAL_MINIMUM_BALANCE_USD", d.approval_minimum_balance_nanos
        ),
        approval_monthly_cap_nanos=usd_nanos(
            env, "BILLING_SETTINGS_APPROVAL_MONTHLY_CAP_USD", d.approval_monthly_cap_nanos
        ),
    )
