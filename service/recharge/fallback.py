"""The backup card: a recharge the primary card hard-declined, or that needed authentication, is tried
once more on the company's backup card, as a new attempt of the same recharge.

The fallback attempt is inserted in the transaction that records the primary attempt's final answer,
so the decline and its fallback commit together or not at all, and the loop calls the provider only
after that commit, as for any attempt. Its id, and so its idempotency key at the provider, is derived
from the primary attempt's id (``fallback_attempt_id``): a crash and a retry find the same row, and
the unique (company_id, fallback_of) constraint allows one fallback per recharge.

It has the primary's kind and amount: that recharge was already bounded by the monthly cap and the
deployment's ceilings when it was planned, and the declined primary charged nothing and no longer
counts towards them, so the two attempts never take the money twice. A fallback never falls back, and
whatever ends it other than a success pauses auto-recharge (the primary's decline was final).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from . import transitions
from .attempts import Attempt
from .transitions import Outcome, PauseReason, Status
from .wallet_events import Conn, card_label, emit

PRIMARY = "primary"
BACKUP = "backup"
# Names the fallback ids (uuid5): the same primary attempt always gives the same fallback attempt.
_FALLBACK_NAMESPACE = uuid.UUID("0c6f5d0e-3b7a-4c1e-9d2f-4a8b17b0c0d1")


def fallback_attempt_id(primary_attempt_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_FALLBACK_NAMESPACE, f"fallback:{primary_attempt_id}")


def primary_cancel_key(primary_attempt_id: uuid.UUID) -> str:
    """The idempotency key of the request that cancels a primary's PaymentIntent before its fallback
    charges the backup: the same after any crash, so a retry gets the first answer again."""
    return f"recharge-{primary_attempt_id}:cancel-for-fallback"


@dataclass(frozen=True, slots=True)
class Primary:
    status: Status
    payment_intent_id: str | None

    @property
    def may_still_be_paid(self) -> bool:
        """A PaymentIntent left waiting for 3-D Secure can be completed by its cardholder later (a
        hosted page, an email link); charging the backup next to it could take the money twice."""
        return self.status is Status.REQUIRES_ACTION and self.payment_intent_id is not None


async def primary_of(conn: Conn, attempt: Attempt) -> Primary:
    row = await conn.fetchrow(
        "select status, payment_intent_id from recharge_attempts where company_id = $1 and attempt_id = $2",
        attempt.company_id,
        attempt.fallback_of,
    )
    assert row is not None, "a fallback's primary attempt is never deleted"
    return Primary(Status(row["status"]), row["payment_intent_id"])


@dataclass(frozen=True, slots=True)
class Fallback:
    attempt_id: uuid.UUID
    payment_method_id: str
    brand: str
    last4: str


async def start_fallback(conn: Conn, attempt: Attempt, outcome: Outcome) -> Fallback | None:
    """After a primary attempt's final answer was written, under its row lock: create the fallback
    attempt if the answer calls for one and a backup card (another card) is on file.

    The settings row lock orders this against a card being set or removed, so the cards read here
    are the ones on file when the fallback commits.
    """
    if attempt.card_role != PRIMARY or not transitions.falls_back(outcome):
        return None
    await conn.execute("select 1 from billing_settings where company_id = $1 for update", attempt.company_id)
    cards = {
        row["role"]: row
        for row in await conn.fetch(
            "select role, payment_method_id, brand, last4 from payment_cards where company_id = $1",
            attempt.company_id,
        )
    }
    backup, primary = cards.get(BACKUP), cards.get(PRIMARY)
    if backup is None or primary is None or primary["payment_method_id"] != attempt.payment_method_id:
        # No backup; or the declined card is no longer the primary, and the new one deserves its own try.
        return None
    fallback_id = fallback_attempt_id(attempt.attempt_id)
    inserted = await conn.fetchval(
        """
        insert into recharge_attempts (attempt_id, company_id, kind, amount_nanos, provider_customer_id,
                                       payment_method_id, card_brand, card_last4, retry_number,
                                       next_attempt_at, card_role, fallback_of)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), 'backup', $10)
        on conflict do nothing
        returning attempt_id
        """,
        fallback_id,
        attempt.company_id,
        attempt.kind.value,
        attempt.amount_nanos,
        attempt.provider_customer_id,
        backup["payment_method_id"],
        backup["brand"],
        backup["last4"],
        attempt.retry_number,
        attempt.attempt_id,
    )
    if inserted is None:
        return None  # this recharge has had its fallback already
    return Fallback(fallback_id, backup["payment_method_id"], backup["brand"], backup["last4"])


async def announce(conn: Conn, attempt: Attempt, fallback: Fallback) -> None:
    """recharge_started for the fallback, after the primary's recharge_falling_back."""
    await emit(
        conn,
        attempt.company_id,
        "recharge_started",
        {
            "attempt_id": str(fallback.attempt_id),
            "kind": attempt.kind.value,
            "amount_nanos": attempt.amount_nanos,
            "retry_number": attempt.retry_number,
            "fallback_of": str(attempt.attempt_id),
            "card": card_label(fallback.brand, fallback.last4),
            **card_fields(BACKUP, fallback.payment_method_id, fallback.brand, fallback.last4),
        },
    )


def card_fields(role: str, payment_method_id: str, brand: str, last4: str) -> dict[str, str]:
    """Which card an event is about."""
    return {
        "card_role": role,
        "payment_method_id": payment_method_id,
        "card_brand": brand,
        "card_last4": last4,
    }


def attempt_card_fields(attempt: Attempt) -> dict[str, str]:
    return card_fields(attempt.card_role, attempt.payment_method_id, attempt.card_brand, attempt.card_last4)


async def pause_after_fallback(conn: Conn, attempt: Attempt, pause: PauseReason | None) -> PauseReason | None:
    """A fallback that ended without a success pauses auto-recharge: with its own reason if it has
    one, else with the primary's (its decline was final; a soft decline on the backup is not retried,
    so the loop does not go back to a primary that has already declined)."""
    if pause is not None:
        return pause
    primary_status = await conn.fetchval(
        "select status from recharge_attempts where company_id = $1 and attempt_id = $2",
        attempt.company_id,
        attempt.fallback_of,
    )
    if primary_status == Status.REQUIRES_ACTION.value:
        return PauseReason.AUTHENTICATION_REQUIRED
    return PauseReason.HARD_DECLINE
