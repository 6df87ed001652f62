"""PaymentProvider on the official ``stripe`` library (async, over httpx).

Rules kept here so callers need not know them:

* Every POST carries the caller's idempotency key. Calls that need two POSTs (attach + set default)
  derive one key per step from the caller's key (``<key>:attach``, ``<key>:set-default``), so a
  retry of the whole call replays both steps. The library never invents a key.
* The library retries transient failures itself (``max_network_retries``), reusing our key; what
  still fails afterwards becomes ``OutcomeUnknown`` for the caller's own, slower retry.
* Exceptions raised here are built from Stripe's error type, HTTP status, code, request id and
  message only (``stripe_answers.translate``), and raised ``from None``: Stripe's error objects hold
  the whole response body, which for a PaymentIntent includes its client_secret, and must not reach a
  traceback in our logs.

Stripe's objects are read into ours in ``stripe_answers.py``; webhooks are verified and read in
``stripe_webhooks.py``.
"""

from __future__ import annotations

import logging

import stripe

from .provider import (
    CardDetails,
    ChargeResult,
    PaymentMethodRejected,
    SetupIntent,
    WebhookEvent,
    check_amount_cents,
)
from .stripe_answers import charge_result_from_intent, declined, setup_intent_of, translate
from .stripe_webhooks import parse_webhook

# Pinned so a library upgrade cannot silently change response shapes; bump deliberately, together
# with the fake server in tests/support/fake_stripe.py. This is the version stripe 16.1.0 targets.
STRIPE_API_VERSION = "2026-10-28.endive"
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_NETWORK_RETRIES = 2

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
            raise translate(e) from None
        return customer.id

    async def create_setup_intent(self, customer_id: str, idempotency_key: str) -> SetupIntent:
        try:
            intent = await self._client.v1.setup_intents.create_async(
                {"customer": customer_id, "usage": "off_session", "allowed_payment_method_types": ["card"]},
                options={"idempotency_key": _key(idempotency_key)},
            )
        except stripe.StripeError as e:
            raise translate(e) from None
        return setup_intent_of(intent)

    async def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        try:
            intent = await self._client.v1.setup_intents.retrieve_async(setup_intent_id)
        except stripe.StripeError as e:
            raise translate(e) from None
        return setup_intent_of(intent)

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, idempotency_key: str, *, make_default: bool = True
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
                raise translate(e) from None  # our customer id is wrong: not the card's fault
            error = e.error
            raise PaymentMethodRejected(
                e.user_message or "The card was rejected.",
                code=e.code,
                decline_code=error.decline_code if error is not None else None,
                request_id=e.request_id,
            ) from None
        except stripe.StripeError as e:
            raise translate(e) from None
        card = method.card
        if method.type != "card" or card is None:
            raise PaymentMethodRejected("Only cards are accepted.", code="unsupported_payment_method_type")
        try:
            if make_default:
                await self._client.v1.customers.update_async(
                    customer_id,
                    {"invoice_settings": {"default_payment_method": method.id}},
                    options={"idempotency_key": f"{key}:set-default"},
                )
        except stripe.StripeError as e:
            raise translate(e) from None
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
            raise translate(e) from None

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
            return declined(e)
        except stripe.StripeError as e:
            raise translate(e) from None
        return charge_result_from_intent(intent.to_dict())

    async def retrieve_payment_intent(self, payment_intent_id: str) -> ChargeResult:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.StripeError as e:
            raise translate(e) from None
        return charge_result_from_intent(intent.to_dict())

    async def cancel_payment_intent(self, payment_intent_id: str, idempotency_key: str) -> ChargeResult:
        try:
            intent = await self._client.v1.payment_intents.cancel_async(
                payment_intent_id, options={"idempotency_key": _key(idempotency_key)}
            )
        except stripe.InvalidRequestError as e:
            if e.code != "payment_intent_unexpected_state":
                raise translate(e) from None
            # Succeeded or processing meanwhile: not cancelable, and its state is the answer.
            return await self.retrieve_payment_intent(payment_intent_id)
        except stripe.StripeError as e:
            raise translate(e) from None
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
            raise translate(e) from None
        return None

    def parse_webhook(self, payload: bytes, signature_header: str) -> WebhookEvent:
        return parse_webhook(payload, signature_header, *self._webhook_secrets)

    @property
    def livemode(self) -> bool:
        return self._livemode


def _key(idempotency_key: str) -> str:
    # An empty key would make the library generate its own, silently losing our idempotency.
    if not idempotency_key:
        raise ValueError("an idempotency key is required")
    return idempotency_key
