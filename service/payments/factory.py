"""Which payment provider the service uses: Stripe when a secret key is configured, else the sandbox.

The only place outside this package's implementations that decides between them; the composition
root calls `make_provider(config)` once at start.
"""

from __future__ import annotations

import structlog

from service.config import Config
from service.payments.provider import PaymentProvider

log = structlog.get_logger(__name__)

SANDBOX_WARNING = "no Stripe secret key configured: using the sandbox payment provider, NO REAL MONEY MOVES"


def _stripe_mode(secret_key: str) -> str:
    # The key's prefix says live or test mode; the rest of the key is never logged.
    return "live" if "_live_" in secret_key else "test"


def make_provider(config: Config) -> PaymentProvider:
    if config.stripe_secret_key:
        # Imported here so that a service without a key never loads the stripe library at all.
        from service.payments.stripe_provider import STRIPE_API_VERSION, StripeProvider

        provider = StripeProvider(
            api_key=config.stripe_secret_key,
            api_base=config.stripe_api_base or None,
            webhook_secret=config.stripe_webhook_secret,
        )
        log.info(
            "payment provider: Stripe",
            mode=_stripe_mode(config.stripe_secret_key),
            api_version=STRIPE_API_VERSION,
            api_base=config.stripe_api_base or "stripe",
        )
        return provider
    from service.payments.sandbox_provider import SandboxProvider

    log.warning(SANDBOX_WARNING, hint="set BILLING_STRIPE_SECRET_KEY to charge real cards")
    return SandboxProvider()
