"""Stripe webhooks: ``POST /stripe/webhooks`` on its own port (``BILLING_WEBHOOK_PORT``).

Rules, in order:

1. The signature is checked on the raw body, byte for byte, by the provider (Stripe's HMAC and its
   300 s tolerance), against the current secret and, while one is being rotated out, the previous one.
   Bad, stale or missing: HTTP 400 and nothing changes.
2. Nothing in the payload but the PaymentIntent's id is trusted: the PaymentIntent is fetched again
   with our key, and it must match the attempt the event names (same customer, USD, the attempt's
   amount, the attempt's own PaymentIntent when one is recorded, our metadata, and our key's mode, as
   must the event's). A mismatch credits nothing: the event is kept in ``stripe_webhook_reviews`` for
   a person, logged at ERROR, and answered 200 (a redelivery would not match either).
3. The event id is recorded in the same transaction as its effect, so a redelivery (Stripe delivers
   at least once) changes nothing, and a failed transaction leaves the event to be delivered again.
4. The attempt's status only moves forward (outcomes.apply_outcome): a failure never undoes a success,
   and a PaymentIntent credits the wallet once whether the webhook or the synchronous answer comes
   first.
5. One fetch, one short transaction, then 200: Stripe wants an answer within seconds. When Stripe does
   not answer the fetch, 503, and Stripe delivers again later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from service.domain.money import NANOS_PER_CENT
from service.metrics import STRIPE_WEBHOOKS
from service.payments.provider import (
    ChargeResult,
    CredentialsRejected,
    InvalidWebhook,
    OutcomeUnknown,
    PaymentProvider,
    PaymentProviderError,
    WebhookEvent,
)

from .attempts import ATTEMPT_METADATA_KEY
from .outcomes import Backoff, apply_outcome, outcome_of
from .webhook_events import NamedAttempt, find_attempt, hold_for_review, record_webhook_event

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/stripe/webhooks"
HANDLED_TYPES = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.requires_action",
        "payment_intent.processing",
    }
)
# Stripe's events are small; anything much larger is not from Stripe.
MAX_BODY_BYTES = 1024 * 1024


class ProviderUnreachable(Exception):
    """The PaymentIntent could not be fetched now; the delivery should be retried."""


def mismatches(
    event: WebhookEvent, fetched: ChargeResult | None, attempt: NamedAttempt, livemode: bool
) -> list[str]:
    """Every way the event and the PaymentIntent fetched with our key fail to match the attempt."""
    reasons: list[str] = []
    if event.livemode is not None and event.livemode != livemode:
        reasons.append("event_livemode")
    if fetched is None:
        reasons.append("payment_intent_not_found")
        return reasons
    if fetched.livemode is not None and fetched.livemode != livemode:
        reasons.append("livemode")
    if fetched.customer_id != attempt.provider_customer_id:
        reasons.append("customer")
    if (fetched.currency or "").lower() != "usd":
        reasons.append("currency")
    if fetched.amount_cents is None or fetched.amount_cents * NANOS_PER_CENT != attempt.amount_nanos:
        reasons.append("amount")
    if attempt.payment_intent_id is not None and attempt.payment_intent_id != fetched.payment_intent_id:
        reasons.append("payment_intent")
    if fetched.metadata.get(ATTEMPT_METADATA_KEY) != str(attempt.attempt_id):
        reasons.append("attempt_metadata")
    return reasons


def _review_details(
    event: WebhookEvent, fetched: ChargeResult | None, attempt: NamedAttempt
) -> dict[str, Any]:
    def intent(r: ChargeResult | WebhookEvent | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {
            "payment_intent_id": r.payment_intent_id,
            "customer_id": r.customer_id,
            "currency": r.currency,
            "amount_cents": r.amount_cents,
            "status": None if r.status is None else r.status.value,
            "livemode": r.livemode,
            "attempt_metadata": r.metadata.get(ATTEMPT_METADATA_KEY),
        }

    return {
        "event": intent(event),
        "fetched": intent(fetched),
        "attempt": {
            "attempt_id": str(attempt.attempt_id),
            "customer_id": attempt.provider_customer_id,
            "amount_nanos": attempt.amount_nanos,
            "payment_intent_id": attempt.payment_intent_id,
        },
    }


async def fetch_payment_intent(provider: PaymentProvider, event: WebhookEvent) -> ChargeResult | None:
    """The event's PaymentIntent as our key sees it; None when our account has no such PaymentIntent."""
    if event.type not in HANDLED_TYPES or event.status is None or not event.payment_intent_id:
        return None
    try:
        return await provider.retrieve_payment_intent(event.payment_intent_id)
    except (OutcomeUnknown, CredentialsRejected) as e:
        # Stripe did not answer, or refused our key: nothing is decided; Stripe delivers again.
        raise ProviderUnreachable(str(e)) from None
    except PaymentProviderError:
        return None


async def apply_event(
    pool: asyncpg.Pool,
    event: WebhookEvent,
    fetched: ChargeResult | None,
    backoff: Backoff,
    *,
    livemode: bool,
) -> tuple[str, str | None]:
    """Apply a verified event once, settling its attempt with the PaymentIntent fetched with our key;
    returns (what happened, company id to look at again or None)."""
    async with pool.acquire() as conn, conn.transaction():
        if event.type not in HANDLED_TYPES or event.status is None:
            await record_webhook_event(conn, event.id, event.type, event.payment_intent_id, "ignored_type")
            return "ignored_type", None
        attempt = await find_attempt(conn, event.metadata.get(ATTEMPT_METADATA_KEY), event.payment_intent_id)
        if attempt is None:
            if not await record_webhook_event(
                conn, event.id, event.type, event.payment_intent_id, "unknown_attempt"
            ):
                return "duplicate", None
            log.warning("webhook for a PaymentIntent we did not create", event_id=event.id, type=event.type)
            return "unknown_attempt", None
        reasons = mismatches(event, fetched, attempt, livemode)
        if reasons:
            if not await record_webhook_event(
                conn, event.id, event.type, event.payment_intent_id, "held_for_review"
            ):
                return "duplicate", None
            await hold_for_review(
                conn,
                event.id,
                event.type,
                event.payment_intent_id,
                attempt,
                reasons,
                _review_details(event, fetched, attempt),
            )
            log.error(
                "stripe webhook does not match its recharge attempt: nothing credited, held for review",
                event_id=event.id,
                type=event.type,
                attempt_id=str(attempt.attempt_id),
                company_id=attempt.company_id,
                payment_intent_id=event.payment_intent_id,
                reasons=reasons,
            )
            return "held_for_review", None
        assert fetched is not None  # no mismatch means it was found
        if not await record_webhook_event(conn, event.id, event.type, event.payment_intent_id, "applied"):
            return "duplicate", None
        recorded = await apply_outcome(conn, attempt.attempt_id, outcome_of(fetched), fetched, backoff)
        if not recorded.changed:
            await conn.execute(
                "update stripe_webhook_events set outcome = 'ignored_final' where event_id = $1", event.id
            )
            return "ignored_final", None
        return "applied", recorded.company_id if recorded.status.is_final else None


class WebhookServer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: PaymentProvider,
        backoff: Backoff,
        *,
        on_settled: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._provider = provider
        self._backoff = backoff
        self._on_settled = on_settled
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(WEBHOOK_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("stripe webhooks listening", host=host, port=self.port, path=WEBHOOK_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.read()  # the raw bytes: the signature covers exactly these
        signature = request.headers.get("Stripe-Signature", "")
        try:
            event = self._provider.parse_webhook(payload, signature)
        except InvalidWebhook as e:
            log.warning("stripe webhook rejected", reason=str(e))
            STRIPE_WEBHOOKS.labels(result="rejected").inc()
            return web.json_response({"error": "invalid signature or payload"}, status=400)
        try:
            fetched = await fetch_payment_intent(self._provider, event)
        except ProviderUnreachable as e:
            log.warning(
                "stripe webhook not applied: the PaymentIntent could not be fetched",
                event_id=event.id,
                error=str(e),
            )
            STRIPE_WEBHOOKS.labels(result="retry_later").inc()
            return web.json_response({"error": "try again"}, status=503)
        try:
            result, company_id = await apply_event(
                self._pool, event, fetched, self._backoff, livemode=self._provider.livemode
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # Nothing was recorded; Stripe retries a non-2xx delivery.
            log.error("stripe webhook not applied", event_id=event.id, error=str(e))
            STRIPE_WEBHOOKS.labels(result="retry_later").inc()
            return web.json_response({"error": "try again"}, status=503)
        log.info("stripe webhook", event_id=event.id, type=event.type, result=result)
        STRIPE_WEBHOOKS.labels(result=result).inc()
        if company_id is not None and self._on_settled is not None:
            self._on_settled(company_id)
        return web.json_response({"received": True, "result": result})
