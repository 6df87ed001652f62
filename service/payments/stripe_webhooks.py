"""Stripe webhooks: the signature checked with the library's own verifier, the event read into a
WebhookEvent (a PaymentIntent's fields through the same reading as an API answer)."""

from __future__ import annotations

import json
from typing import Any

import stripe

from .provider import InvalidWebhook, WebhookEvent
from .stripe_answers import charge_result_from_intent, int_field, str_field

# Stripe's own default; a webhook older than this is refused as a possible replay.
WEBHOOK_TOLERANCE_S = stripe.Webhook.DEFAULT_TOLERANCE


def parse_webhook(payload: bytes, signature_header: str, *webhook_secrets: str) -> WebhookEvent:
    """Verify a Stripe webhook with the library's own check (HMAC-SHA256, 300 s tolerance) against
    each secret in turn (the current one and, while rotating, the previous one)."""
    if not webhook_secrets:
        raise InvalidWebhook("no webhook secret is configured")
    rejected: stripe.SignatureVerificationError | None = None
    for secret in webhook_secrets:
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature_header, secret, tolerance=WEBHOOK_TOLERANCE_S
            )
        except stripe.SignatureVerificationError as e:
            rejected = e
            continue
        rejected = None
        break
    if rejected is not None:
        raise InvalidWebhook(f"webhook signature rejected: {rejected.user_message}") from None
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidWebhook("webhook body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise InvalidWebhook("webhook body is not a Stripe event")
    obj = event.get("data", {}).get("object") if isinstance(event.get("data"), dict) else None
    livemode = event.get("livemode")
    base: dict[str, Any] = {
        "id": event["id"],
        "type": str_field(event, "type") or "",
        "created_at_s": int_field(event, "created") or 0,
        "livemode": livemode if isinstance(livemode, bool) else None,
    }
    if isinstance(obj, dict) and obj.get("object") == "payment_intent":
        result = charge_result_from_intent(obj)
        return WebhookEvent(
            **base,
            payment_intent_id=result.payment_intent_id,
            status=result.status,
            amount_cents=result.amount_cents,
            currency=result.currency,
            customer_id=result.customer_id,
            decline_code=result.decline_code,
            message=result.message,
            metadata=result.metadata,
        )
    return WebhookEvent(**base)
