"""Which payment provider the service runs with: Stripe when a key is configured, else the sandbox."""

from __future__ import annotations

from service.config import Config
from service.payments.provider import PaymentProvider


def make_provider(config: Config) -> PaymentProvider:
    if config.stripe_secret_key:
        from service.payments.stripe_provider import StripeProvider

        return StripeProvider(
            api_key=config.stripe_secret_key,
            api_base=config.stripe_api_base or None,
            webhook_secret=config.stripe_webhook_secret,
        )
    from service.payments.sandbox_provider import SandboxProvider

    return SandboxProvider()
