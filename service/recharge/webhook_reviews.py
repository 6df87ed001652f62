"""Stripe webhook events held for review: listed and resolved by a person.

An event whose PaymentIntent, fetched again with our key, did not match its attempt credited nothing and
was kept in `stripe_webhook_reviews` (service/recharge/webhook_events.py). A person looks at it (in the
Stripe dashboard: was the money taken? from whom?), settles it by hand if need be (`wallet credit`), and
records what was done here. Resolving is idempotent: the same resolution again changes nothing; another
one for an event already resolved is refused, so a resolution is never overwritten.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from service.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from service.domain.text import excerpt, has_unprintable

from .wallet_events import Conn

EVENT_ID = re.compile(r"[A-Za-z0-9_]{1,255}")
MAX_RESOLUTION_CHARS = 500

# Every company's held events, newest first ($1: how many), and one by its Stripe event id: an operator's
# reads, not per company (the operator has the event id, not the company).
_LIST_OPEN_SQL = """
    select * from stripe_webhook_reviews where resolved_at is null
     order by received_at desc, event_id limit $1
"""
_LIST_ALL_SQL = """
    select * from stripe_webhook_reviews order by received_at desc, event_id limit $1
"""
_RESOLVE_SQL = """
    update stripe_webhook_reviews set resolved_at = now(), resolution = $2, resolved_by = $3
     where event_id = $1 and resolved_at is null
    returning *
"""
_READ_SQL = "select * from stripe_webhook_reviews where event_id = $1"


@dataclass(frozen=True)
class WebhookReview:
    event_id: str
    event_type: str
    payment_intent_id: str | None
    attempt_id: uuid.UUID
    company_id: str
    reasons: tuple[str, ...]
    # What the event, the PaymentIntent fetched with our key and the attempt said.
    details: dict[str, Any]
    received_at: datetime
    resolved_at: datetime | None
    resolution: str | None
    resolved_by: str | None


def _review(row: asyncpg.Record) -> WebhookReview:
    details = row["details"]
    return WebhookReview(
        event_id=row["event_id"],
        event_type=row["event_type"],
        payment_intent_id=row["payment_intent_id"],
        attempt_id=row["attempt_id"],
        company_id=row["company_id"],
        reasons=tuple(row["reasons"]),
        details=json.loads(details) if isinstance(details, str) else dict(details),
        received_at=row["received_at"],
        resolved_at=row["resolved_at"],
        resolution=row["resolution"],
        resolved_by=row["resolved_by"],
    )


async def list_reviews(conn: Conn, *, open_only: bool, limit: int) -> list[WebhookReview]:
    """The newest reviews first; only those nobody has resolved yet when `open_only`."""
    rows = await conn.fetch(_LIST_OPEN_SQL if open_only else _LIST_ALL_SQL, limit)
    return [_review(row) for row in rows]


def resolution_violations(event_id: str, resolution: str) -> list[FieldViolation]:
    violations = []
    if not EVENT_ID.fullmatch(event_id):
        violations.append(
            FieldViolation("event_id", f"{excerpt(event_id)} is not a Stripe event id (letters, digits, '_')")
        )
    if not resolution.strip():
        violations.append(FieldViolation("resolution", "is required: say what was found and done"))
    elif len(resolution) > MAX_RESOLUTION_CHARS:
        violations.append(FieldViolation("resolution", f"must be at most {MAX_RESOLUTION_CHARS} characters"))
    elif has_unprintable(resolution):
        violations.append(FieldViolation("resolution", "must not hold control or format characters"))
    return violations


async def resolve_review(
    conn: Conn, event_id: str, resolution: str, resolved_by: str
) -> tuple[WebhookReview, bool]:
    """Mark a review resolved; returns it and whether it already was, with this same resolution."""
    violations = resolution_violations(event_id, resolution)
    if violations:
        raise InvalidArgument(violations)
    row = await conn.fetchrow(_RESOLVE_SQL, event_id, resolution, resolved_by)
    if row is not None:
        return _review(row), False
    row = await conn.fetchrow(_READ_SQL, event_id)
    if row is None:
        raise NotFound(f"no Stripe webhook event {excerpt(event_id)} is held for review")
    review = _review(row)
    if review.resolution != resolution:
        when = f"{review.resolved_at:%Y-%m-%d %H:%M:%S%z}"
        raise FailedPrecondition(
            f"Stripe webhook event {event_id} was already resolved at {when} by "
            f"{review.resolved_by or 'unknown'}: {excerpt(review.resolution, 80)}"
        )
    return review, True
