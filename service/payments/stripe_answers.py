"""Stripe's answers read into ours: a PaymentIntent or SetupIntent as a ChargeResult or SetupIntent,
a card error as the decline it is, and the library's exceptions as PaymentProviderError by what the
caller can do about them (see provider.py).

The exceptions built here hold Stripe's error type, HTTP status, code, request id and message only:
Stripe's error objects carry the whole response body (a PaymentIntent's client_secret included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import stripe

from .declines import classify_decline
from .provider import (
    ChargeResult,
    ChargeStatus,
    CredentialsRejected,
    IdempotencyConflict,
    OutcomeUnknown,
    PaymentProviderError,
    SetupIntent,
)


def charge_result_from_intent(intent: Mapping[str, Any]) -> ChargeResult:
    """ChargeResult for a PaymentIntent given as plain JSON (API response or webhook object)."""
    status = intent.get("status")
    error = intent.get("last_payment_error")
    error = error if isinstance(error, dict) else {}
    decline_code = str_field(error, "decline_code") or str_field(error, "code")
    message = str_field(error, "message")
    if status == "succeeded":
        charge_status = ChargeStatus.SUCCEEDED
    elif status == "requires_action":
        charge_status = ChargeStatus.REQUIRES_ACTION
    elif status == "requires_payment_method" and error:
        # Stripe's state after a failed confirmation: the attempt is over, the error says why.
        charge_status = classify_decline(
            code=str_field(error, "code"),
            decline_code=str_field(error, "decline_code"),
            advice_code=str_field(error, "advice_code"),
        )
    elif status == "canceled":
        # Final and unpaid; charging again needs a new PaymentIntent (and a new key).
        charge_status = ChargeStatus.HARD_DECLINE
        message = message or "The payment was canceled."
    else:
        # processing, requires_capture/confirmation, or something new: not final, so neither
        # credit the wallet nor charge again; the webhook (or a later retrieve) settles it.
        charge_status = ChargeStatus.PROCESSING
    amount = intent.get("amount")
    customer = intent.get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    livemode = intent.get("livemode")
    metadata = intent.get("metadata")
    return ChargeResult(
        payment_intent_id=str_field(intent, "id"),
        status=charge_status,
        amount_cents=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        decline_code=decline_code if charge_status is not ChargeStatus.SUCCEEDED else None,
        message=message if charge_status is not ChargeStatus.SUCCEEDED else None,
        customer_id=customer if isinstance(customer, str) else None,
        currency=str_field(intent, "currency"),
        livemode=livemode if isinstance(livemode, bool) else None,
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
    )


def setup_intent_of(intent: stripe.SetupIntent) -> SetupIntent:
    if not intent.client_secret:
        raise PaymentProviderError(f"SetupIntent {intent.id} came back without a client secret")
    customer = intent.customer
    return SetupIntent(
        setup_intent_id=intent.id,
        client_secret=intent.client_secret,
        status=intent.status,
        customer_id=customer if isinstance(customer, str) else getattr(customer, "id", None),
    )


def declined(e: stripe.CardError) -> ChargeResult:
    error = e.error
    decline_code = (error.decline_code if error is not None else None) or e.code
    intent = error.payment_intent if error is not None else None
    status = classify_decline(
        code=e.code,
        decline_code=error.decline_code if error is not None else None,
        advice_code=error.advice_code if error is not None else None,
    )
    if intent is not None and intent.status == "requires_action":
        status = ChargeStatus.REQUIRES_ACTION
    if intent is None:
        return ChargeResult(None, status, None, decline_code=decline_code, message=e.user_message)
    # Who, what currency, which mode and our metadata, as a retrieve of the same PaymentIntent says.
    described = charge_result_from_intent(intent.to_dict())
    return dataclasses.replace(described, status=status, decline_code=decline_code, message=e.user_message)


def translate(e: stripe.StripeError) -> PaymentProviderError:
    """Stripe's exception -> ours, by what the caller can do about it (see provider.py)."""
    status = e.http_status
    where = f"HTTP {status}" if status is not None else "no response"
    # 409 is checked first: Stripe answers `idempotency_key_in_use` (an idempotency error) while the first
    # request under the key is still running, and that is an unknown outcome to retry with the same key,
    # not a caller bug like reusing a key with other parameters (400).
    if isinstance(e, stripe.IdempotencyError) and status != 409:
        return IdempotencyConflict(
            f"Stripe idempotency error ({where}): {e.user_message}", code=e.code, request_id=e.request_id
        )
    if (
        isinstance(e, (stripe.APIConnectionError, stripe.RateLimitError))
        or status is None
        or status >= 500
        or status in (409, 429)
    ):
        return OutcomeUnknown(
            f"Stripe outcome unknown ({type(e).__name__}, {where}): {e.user_message}",
            code=e.code,
            request_id=e.request_id,
        )
    if isinstance(e, (stripe.AuthenticationError, stripe.PermissionError)):
        # Stripe's message echoes part of the key; keep it out of our logs altogether.
        return CredentialsRejected(
            f"Stripe refused our credentials ({where})", code=e.code, request_id=e.request_id
        )
    return PaymentProviderError(
        f"Stripe refused the request ({type(e).__name__}, {where}, code={e.code}): {e.user_message}",
        code=e.code,
        request_id=e.request_id,
    )


def str_field(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None


def int_field(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
