"""Card setup: the company's SetupIntent (usage=off_session) for Stripe.js.

A SetupIntent's client secret is passed through to the caller only: it is neither stored nor logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.app import idempotency
from service.app.payment_customers import ensure_customer, provider_failure, provider_key, request_of
from service.payments.provider import (
    CredentialsRejected,
    IdempotencyConflict,
    OutcomeUnknown,
    PaymentProvider,
    PaymentProviderError,
    SetupIntent,
)

START_CARD_SETUP = "start_card_setup"


@dataclass(frozen=True)
class CardSetup:
    customer_id: str
    intent: SetupIntent
    replayed: bool


async def start_card_setup(
    pool: asyncpg.Pool, provider: PaymentProvider, company_id: str, request_id: str
) -> CardSetup:
    """The company's SetupIntent (usage=off_session) for Stripe.js: the one still waiting for a card if
    there is one, whatever the request id, else a new one.

    A new one's provider key is derived from the company's setup generation, not the request id, so
    concurrent first requests get one SetupIntent between them; the generation moves on when a card is
    set. A retry of a request gets the same SetupIntent back, as long as it is still open.
    """
    request = request_of(START_CARD_SETUP, company_id, request_id)
    seen = await idempotency.find(pool, request)
    customer_id = await ensure_customer(pool, provider, company_id)
    stored = await pool.fetchrow(
        "select open_setup_intent_id, setup_generation from payment_customers where company_id = $1",
        company_id,
    )
    assert stored is not None  # ensure_customer stored it
    closed_id = stored["open_setup_intent_id"]
    intent = await _open_setup_intent(provider, closed_id, customer_id)
    if intent is None:
        # The key names what it replaces, so a closed SetupIntent is not replayed in its own place.
        key = provider_key(
            START_CARD_SETUP, company_id, customer_id, str(stored["setup_generation"]), closed_id or ""
        )
        try:
            intent = await provider.create_setup_intent(customer_id, key)
        except PaymentProviderError as error:
            raise provider_failure(error, "starting the card setup") from None
        await pool.execute(
            "update payment_customers set open_setup_intent_id = $2 where company_id = $1",
            company_id,
            intent.setup_intent_id,
        )
    if seen is None:
        # The response holds the SetupIntent's client secret, which is never stored: the key is kept with
        # no result, and a retry asks the provider again.
        async with pool.acquire() as conn, conn.transaction():
            if await idempotency.claim(conn, request) is not None:
                return CardSetup(customer_id, intent, replayed=True)
    return CardSetup(customer_id, intent, replayed=seen is not None)


async def _open_setup_intent(
    provider: PaymentProvider, stored_id: str | None, customer_id: str
) -> SetupIntent | None:
    """The company's stored SetupIntent if the provider says it still waits for a card."""
    if stored_id is None:
        return None
    try:
        intent = await provider.retrieve_setup_intent(stored_id)
    except (OutcomeUnknown, IdempotencyConflict, CredentialsRejected) as error:
        raise provider_failure(error, "reading the open card setup") from None
    except PaymentProviderError:
        return None  # gone at the provider: make a new one
    if not intent.is_open or intent.customer_id not in (None, customer_id):
        return None
    return intent
