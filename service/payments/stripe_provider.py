"""PaymentProvider on the official ``stripe`` library (async, over httpx).

Rules kept here so callers need not know them:

* Every POST carries the caller's idempotency key. Calls that need two POSTs (attach + set default)
  derive one key per step from the caller's key (``<key>:attach``, ``<key>:set-default``), so a
  retry of the whole call replays both steps. The library never invents a key.
* The library retries transient failures itself (``max_network_retries``), reusing our key; what
  still fails afterwards becomes ``OutcomeUnknown`` for the caller's own, slower retry.
* Exceptions raised here are built from Stripe's error type, HTTP status, code, request id and
  message only, and raised ``from None``: Stripe's error objects hold the whole response body, which
  for a PaymentIntent includes its client_secret, and must not reach a traceback in our logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

import stripe

from .declines import classify_decline
from .provider import (
    CardDetails,
    ChargeResult,
    ChargeStatus,
    CredentialsRejected,
    IdempotencyConflict,
    InvalidWebhook,
    OutcomeUnknown,
    PaymentMethodRejected,
    PaymentProviderError,
    SetupIntent,
    WebhookEvent,
    check_amount_cents,
)

# Pinned so a library upgrade cannot silently change response shapes; bump deliberately, together
# with the fake server in tests/support/fake_stripe.py. This is the version stripe 16.1.0 targets.
STRIPE_API_VERSION = "2026-10-28.endive"
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_NETWORK_RETRIES = 2
# Stripe's own default; a webhook older than this is refused as a possible replay.
WEBHOOK_TOLERANCE_S = stripe.Webhook.DEFAULT_TOLERANCE

# The library logs whole response bodies (client secrets included) at DEBUG on the "stripe" logger.
# Keep that logger at INFO even when the service runs with DEBUG logging.
logging.getLogger("stripe").setLevel(logging.INFO)


class StripeProvider:
    def __init__(
        self,
        api_key: str,
        api_base: str | None,
        webhook_secret: str,
        *,
        previous_webhook_secret: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_network_retries: int = DEFAULT_MAX_NETWORK_RETRIES,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required")
        # While a secret is rotated, Stripe signs with both: either one verifies a delivery.
        self._webhook_secrets = tuple(s for s in (webhook_secret, previous_webhook_secret) if s)
        self._livemode = "_live_" in api_key
        # Certificates only mean something over TLS; skipping the CA bundle for a plain-http base
        # (the loopback fake in tests) also saves ~0.1 s of loading it per provider.
        plain_http = api_base is not None and api_base.startswith("http://")
        self._http = stripe.HTTPXClient(timeout=timeout_s, verify_ssl_certs=not plain_http)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
            stripe_version=STRIPE_API_VERSION,
        )

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(api_version={STRIPE_API_VERSION!r})"

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, company_id: str, idempotency_key: str) -> str:
        try:
            customer = await self._client.v1.customers.create_async(
                {"metadata": {"company_id": company_id}},
                options={"idempotency_key": _key(idempotency_key)},
            )
        except stripe.StripeError as e:
            raise _translate(e) from None
        return customer.id

    async def create_setup_intent(self, customer_id: str, idempotency_key: str) -> SetupIntent:
        try:
            intent = await self._client.v1.setup_intents.create_async(
                {"customer": customer_id, "usage": "off_session", "allowed_payment_method_types": ["card"]},
                options={"idempotency_key": _key(idempotency_key)},
            )
        except stripe.StripeError as e:
            raise _translate(e) from None
        return _setup_intent(intent)

    async def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        try:
            intent = await self._client.v1.setup_intents.retrieve_async(setup_intent_id)
        except stripe.StripeError as e:
            raise _translate(e) from None
        return _setup_intent(intent)

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, idempotency_key: str
    ) -> CardDetails:
        key = _key(idempotency_key)
        try:
            method = await self._client.v1.payment_methods.attach_async(
                payment_method_id,
                {"customer": customer_id},
                options={"idempotency_key": f"{key}:attach"},
            )
        except (stripe.CardError, stripe.InvalidRequestError) as e:
            if isinstance(e, stripe.InvalidRequestError) and e.param == "customer":
                raise _translate(e) from None  # our customer id is wrong: not the card's fault
            error = e.error
            raise PaymentMethodRejected(
                e.user_message or "The card was rejected.",
                code=e.code,
                decline_code=error.decline_code if error is not None else None,
                request_id=e.request_id,
            ) from None
        except stripe.StripeError as e:
            raise _translate(e) from None
        card = method.card
        if method.type != "card" or card is None:
            raise PaymentMethodRejected("Only cards are accepted.", code="unsupported_payment_method_type")
        try:
            await self._client.v1.customers.update_async(
                customer_id,
                {"invoice_settings": {"default_payment_method": method.id}},
                options={"idempotency_key": f"{key}:set-default"},
            )
        except stripe.StripeError as e:
            raise _translate(e) from None
        return CardDetails(
            payment_method_id=method.id,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            fingerprint=card.fingerprint,
        )

    async def detach_payment_method(self, payment_method_id: str, idempotency_key: str) -> None:
        try:
            await self._client.v1.payment_methods.detach_async(
                payment_method_id, options={"idempotency_key": _key(idempotency_key)}
            )
        except stripe.StripeError as e:
            raise _translate(e) from None

    async def charge(
        self,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str,
    ) -> ChargeResult:
        check_amount_cents(amount_cents)
        try:
            intent = await self._client.v1.payment_intents.create_async(
                {
                    "amount": amount_cents,
                    "currency": "usd",
                    "customer": customer_id,
                    "payment_method": payment_method_id,
                    # Cards only: no redirect-based method could complete off-session anyway, and
                    # it spares us a return_url.
                    "allowed_payment_method_types": ["card"],
                    "confirm": True,
                    "off_session": True,
                    "metadata": dict(metadata),
                    "description": description,
                },
                options={"idempotency_key": _key(idempotency_key)},
            )
        except stripe.CardError as e:
            return _declined(e)
        except stripe.StripeError as e:
            raise _translate(e) from None
        return charge_result_from_intent(intent.to_dict())

    async def retrieve_payment_intent(self, payment_intent_id: str) -> ChargeResult:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.StripeError as e:
            raise _translate(e) from None
        return charge_result_from_intent(intent.to_dict())

    async def find_payment_intent(
        self, customer_id: str, metadata_key: str, metadata_value: str
    ) -> ChargeResult | None:
        # Listing by customer rather than the Search API: search is eventually consistent (Stripe
        # documents a lag of up to a minute, longer during incidents), so right after a crash it can
        # answer "none" for a charge that exists, and the caller would charge twice. Listing is
        # consistent; we filter the metadata here. Newest first, so recent attempts are found fast.
        try:
            page = await self._client.v1.payment_intents.list_async({"customer": customer_id, "limit": 100})
            async for intent in page.auto_paging_iter():
                as_json = intent.to_dict()
                metadata = as_json.get("metadata")
                if isinstance(metadata, dict) and metadata.get(metadata_key) == metadata_value:
                    return charge_result_from_intent(as_json)
        except stripe.StripeError as e:
            raise _translate(e) from None
        return None

    def parse_webhook(self, payload: bytes, signature_header: str) -> WebhookEvent:
        return parse_webhook(payload, signature_header, *self._webhook_secrets)

    @property
    def livemode(self) -> bool:
        return self._livemode


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
        "type": _str(event, "type") or "",
        "created_at_s": _int(event, "created") or 0,
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


def charge_result_from_intent(intent: Mapping[str, Any]) -> ChargeResult:
    """ChargeResult for a PaymentIntent given as plain JSON (API response or webhook object)."""
    status = intent.get("status")
    error = intent.get("last_payment_error")
    error = error if isinstance(error, dict) else {}
    decline_code = _str(error, "decline_code") or _str(error, "code")
    message = _str(error, "message")
    if status == "succeeded":
        charge_status = ChargeStatus.SUCCEEDED
    elif status == "requires_action":
        charge_status = ChargeStatus.REQUIRES_ACTION
    elif status == "requires_payment_method" and error:
        # Stripe's state after a failed confirmation: the attempt is over, the error says why.
        charge_status = classify_decline(
            code=_str(error, "code"),
            decline_code=_str(error, "decline_code"),
            advice_code=_str(error, "advice_code"),
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
        payment_intent_id=_str(intent, "id"),
        status=charge_status,
        amount_cents=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        decline_code=decline_code if charge_status is not ChargeStatus.SUCCEEDED else None,
        message=message if charge_status is not ChargeStatus.SUCCEEDED else None,
        customer_id=customer if isinstance(customer, str) else None,
        currency=_str(intent, "currency"),
        livemode=livemode if isinstance(livemode, bool) else None,
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
    )


def _setup_intent(intent: stripe.SetupIntent) -> SetupIntent:
    if not intent.client_secret:
        raise PaymentProviderError(f"SetupIntent {intent.id} came back without a client secret")
    customer = intent.customer
    return SetupIntent(
        setup_intent_id=intent.id,
        client_secret=intent.client_secret,
        status=intent.status,
        customer_id=customer if isinstance(customer, str) else getattr(customer, "id", None),
    )


def _declined(e: stripe.CardError) -> ChargeResult:
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


def _translate(e: stripe.StripeError) -> PaymentProviderError:
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


def _key(idempotency_key: str) -> str:
    # An empty key would make the library generate its own, silently losing our idempotency.
    if not idempotency_key:
        raise ValueError("an idempotency key is required")
    return idempotency_key


def _str(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None


def _int(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
