"""Which payment provider the service uses, as the operator chose it (BILLING_PAYMENT_PROVIDER).

The only place outside this package's implementations that decides between them; the composition
root calls `make_provider(config)` once at start. Configuration already refuses a provider that was not
chosen; this checks again, so that a Config built by hand (tests, tools) cannot get around it.
"""

from __future__ import annotations

import structlog

from service.config import Config, ConfigError
from service.payments.provider import PaymentProvider

log = structlog.get_logger(__name__)

SANDBOX_WARNING = (
    "BILLING_PAYMENT_PROVIDER=sandbox: the sandbox payment provider credits wallets, NO REAL MONEY MOVES"
)


def stripe_mode(secret_key: str) -> str:
    """The key's mode, "live" or "test", from its prefix; the rest of the key is never logged."""
    return "live" if "_live_" in secret_key else "test"


def check_provider_choice(config: Config) -> None:
    """Raise ConfigError unless the configured provider was chosen and is allowed here."""
    if config.payment_provider == "stripe":
        if not config.stripe_secret_key:
            raise ConfigError("BILLING_PAYMENT_PROVIDER=stripe needs BILLING_STRIPE_SECRET_KEY")
        return
    if config.payment_provider != "sandbox":
        raise ConfigError(
            f"BILLING_PAYMENT_PROVIDER={config.payment_provider[:20]!r} must be stripe or sandbox"
        )
    if config.stripe_secret_key:
        raise ConfigError(
            "BILLING_STRIPE_SECRET_KEY is set but BILLING_PAYMENT_PROVIDER=sandbox: unset one of them"
        )
    if config.database_url is not None and not config.allow_sandbox:
        raise ConfigError("BILLING_PAYMENT_PROVIDER=sandbox with DATABASE_URL needs BILLING_ALLOW_SANDBOX=1")


def make_provider(config: Config) -> PaymentProvider:
    check_provider_choice(config)
    if config.payment_provider == "stripe":
        # Imported here so that a sandbox service never loads the stripe library at all.
        from service.payments.stripe_provider import STRIPE_API_VERSION, StripeProvider

        provider = StripeProvider(
            api_key=config.stripe_secret_key,
            api_base=config.stripe_api_base or None,
            webhook_secret=config.stripe_webhook_secret,
            previous_webhook_secret=config.stripe_webhook_secret_previous,
        )
        log.info(
            "payment provider: Stripe",
            mode=stripe_mode(config.stripe_secret_key),
            api_version=STRIPE_API_VERSION,
            api_base=config.stripe_api_base or "stripe",
            webhook_secrets=1 + bool(config.stripe_webhook_secret_previous),
        )
        return provider
    from service.payments.sandbox_provider import SandboxProvider

    log.warning(SANDBOX_WARNING, hint="set BILLING_PAYMENT_PROVIDER=stripe and a key to charge real cards")
    return SandboxProvider()
