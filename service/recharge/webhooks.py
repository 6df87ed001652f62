"""Stripe webhooks: ``POST /stripe/webhooks`` on its own port (``BILLING_WEBHOOK_PORT``).

Rules, in order:

1. The signature is checked on the raw body, byte for byte, by the provider (Stripe's HMAC and its
   300 s tolerance). Bad, stale or missing: HTTP 400 and nothing changes.
2. The event id is recorded in the same transaction as its effect, so a redelivery (Stripe delivers
   at least once) changes nothing, and a failed transaction leaves the event to be delivered again.
3. The attempt's status only moves forward (outcomes.apply_outcome): a failure never undoes a success,
   and a PaymentIntent credits the wallet once whether the webhook or the synchronous answer comes
   first.
4. One short transaction, then 200: Stripe wants an answer within seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import structlog
from aiohttp import web

from service.payments.provider import ChargeResult, InvalidWebhook, PaymentProvider, WebhookEvent

from .attempts import ATTEMPT_METADATA_KEY
from .outcomes import Backoff, apply_outcome, outcome_of
from .webhook_events import find_attempt_id, record_webhook_event

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


async def apply_event(pool: asyncpg.Pool, event: WebhookEvent, backoff: Backoff) -> tuple[str, str | None]:
    """Apply a verified event once; returns (what happened, company id to look at again or None)."""
    async with pool.acquire() as conn, conn.transaction():
        if event.type not in HANDLED_TYPES or event.status is None:
            await record_webhook_event(conn, event.id, event.type, event.payment_intent_id, "ignored_type")
            return "ignored_type", None
        attempt_id = await find_attempt_id(
            conn, event.metadata.get(ATTEMPT_METADATA_KEY), event.payment_intent_id
        )
        outcome_label = "applied" if attempt_id is not None else "unknown_attempt"
        if not await record_webhook_event(conn, event.id, event.type, event.payment_intent_id, outcome_label):
            return "duplicate", None
        if attempt_id is None:
            log.warning("webhook for a PaymentIntent we did not create", event_id=event.id, type=event.type)
            return "unknown_attempt", None
        result = ChargeResult(
            payment_intent_id=event.payment_intent_id,
            status=event.status,
            amount_cents=event.amount_cents,
            decline_code=event.decline_code,
            message=event.message,
        )
        recorded = await apply_outcome(conn, attempt_id, outcome_of(result), result, backoff)
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
            return web.json_response({"error": "invalid signature or payload"}, status=400)
        try:
            result, company_id = await apply_event(self._pool, event, self._backoff)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # Nothing was recorded; Stripe retries a non-2xx delivery.
            log.error("stripe webhook not applied", event_id=event.id, error=str(e))
            return web.json_response({"error": "try again"}, status=503)
        log.info("stripe webhook", event_id=event.id, type=event.type, result=result)
        if company_id is not None and self._on_settled is not None:
            self._on_settled(company_id)
        return web.json_response({"received": True, "result": result})
