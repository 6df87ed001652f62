"""Webhook bookkeeping: each Stripe event id is recorded once, and an event finds its attempt."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from .wallet_events import Conn


async def record_webhook_event(
    conn: Conn, event_id: str, event_type: str, payment_intent_id: str | None, outcome: str
) -> bool:
    """Remember an event id; False if it was seen before (then the caller changes nothing)."""
    inserted = await conn.fetchval(
        """
        insert into stripe_webhook_events (event_id, event_type, payment_intent_id, outcome)
        values ($1, $2, $3, $4) on conflict (event_id) do nothing returning true
        """,
        event_id,
        event_type,
        payment_intent_id,
        outcome,
    )
    return bool(inserted)


@dataclass(frozen=True, slots=True)
class NamedAttempt:
    """The attempt an event names, with what a PaymentIntent must match to settle it."""

    attempt_id: uuid.UUID
    company_id: str
    provider_customer_id: str
    amount_nanos: int
    payment_intent_id: str | None


_ATTEMPT_SQL = """
    select attempt_id, company_id, provider_customer_id, amount_nanos, payment_intent_id
      from recharge_attempts where {where}
"""


async def find_attempt(
    conn: Conn, metadata_attempt_id: str | None, payment_intent_id: str | None
) -> NamedAttempt | None:
    """The attempt an event names: by the attempt id in its metadata, else by its PaymentIntent."""
    row = None
    if metadata_attempt_id:
        try:
            candidate = uuid.UUID(metadata_attempt_id)
        except ValueError:
            candidate = None
        if candidate is not None:
            row = await conn.fetchrow(_ATTEMPT_SQL.format(where="attempt_id = $1"), candidate)
    if row is None and payment_intent_id:
        row = await conn.fetchrow(_ATTEMPT_SQL.format(where="payment_intent_id = $1"), payment_intent_id)
    return None if row is None else NamedAttempt(**dict(row))


async def hold_for_review(
    conn: Conn,
    event_id: str,
    event_type: str,
    payment_intent_id: str | None,
    attempt: NamedAttempt,
    reasons: list[str],
    details: dict[str, Any],
) -> None:
    """Keep an event that did not match its attempt for a person to look at; nothing was credited."""
    await conn.execute(
        """
        insert into stripe_webhook_reviews (event_id, event_type, payment_intent_id, attempt_id, company_id,
                                            reasons, details)
        values ($1, $2, $3, $4, $5, $6, $7::jsonb)
        """,
        event_id,
        event_type,
        payment_intent_id,
        attempt.attempt_id,
        attempt.company_id,
        reasons,
        json.dumps(details, default=str),
    )
