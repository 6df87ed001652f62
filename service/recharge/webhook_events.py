"""Webhook bookkeeping: each Stripe event id is recorded once, and an event finds its attempt."""

from __future__ import annotations

import uuid

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


async def find_attempt_id(
    conn: Conn, metadata_attempt_id: str | None, payment_intent_id: str | None
) -> uuid.UUID | None:
    if metadata_attempt_id:
        try:
            candidate = uuid.UUID(metadata_attempt_id)
        except ValueError:
            candidate = None
        if candidate is not None:
            found = await conn.fetchval(
                "select attempt_id from recharge_attempts where attempt_id = $1", candidate
            )
            if found is not None:
                return found  # type: ignore[no-any-return]
    if payment_intent_id:
        found = await conn.fetchval(
            "select attempt_id from recharge_attempts where payment_intent_id = $1", payment_intent_id
        )
        return found  # type: ignore[no-any-return]
    return None
