"""Outcomes: one provider answer applied to an attempt, and the wallet credited once for a success.

Lock order, everywhere: recharge_attempts row, then the wallet row. ``apply_outcome`` locks the
attempt row and then (through append_ledger_entry()) the wallet row; RecordUsage takes only the wallet
row; planning takes the wallet row and then only inserts an attempt. No path takes them the other way
round while holding the wallet row, so there is no lock cycle.

Each call owns one short transaction (or joins the webhook handler's) and never calls the provider.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from service.domain.money import NANOS_PER_CENT
from service.metrics import RECHARGE_ATTEMPTS
from service.payments.provider import ChargeResult, ChargeStatus

from . import transitions
from .attempts import Attempt
from .engine import Kind
from .fallback import announce, attempt_card_fields, pause_after_fallback, start_fallback
from .transitions import Outcome, Status
from .wallet_events import Conn, card_label, emit

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Recorded:
    company_id: str
    status: Status
    # False when the attempt had already moved on (a webhook or another process got there first).
    changed: bool
    credited: bool = False
    # The fallback attempt onto the backup card this answer created, committed with it.
    fallback_attempt_id: uuid.UUID | None = None


def outcome_of(result: ChargeResult) -> Outcome:
    return {
        ChargeStatus.SUCCEEDED: Outcome.SUCCEEDED,
        ChargeStatus.PROCESSING: Outcome.PROCESSING,
        ChargeStatus.REQUIRES_ACTION: Outcome.REQUIRES_ACTION,
        ChargeStatus.HARD_DECLINE: Outcome.HARD_DECLINE,
        ChargeStatus.SOFT_DECLINE: Outcome.SOFT_DECLINE,
    }[result.status]


@dataclass(frozen=True, slots=True)
class Backoff:
    retry_backoff_s: tuple[float, ...]
    unknown_retry_backoff_s: tuple[float, ...] = transitions.DEFAULT_UNKNOWN_RETRY_BACKOFF_S


async def record_outcome(
    pool: asyncpg.Pool,
    attempt_id: uuid.UUID,
    outcome: Outcome,
    result: ChargeResult | None,
    backoff: Backoff,
    *,
    error: str | None = None,
) -> Recorded:
    """Apply one provider answer to an attempt, in one transaction. Safe to call more than once and
    from any path: the attempt row lock serializes writers, and a status only ever moves forward."""
    async with pool.acquire() as conn, conn.transaction():
        return await apply_outcome(conn, attempt_id, outcome, result, backoff, error=error)


async def apply_outcome(
    conn: Conn,
    attempt_id: uuid.UUID,
    outcome: Outcome,
    result: ChargeResult | None,
    backoff: Backoff,
    *,
    error: str | None = None,
) -> Recorded:
    """``record_outcome`` inside the caller's transaction (the webhook handler's)."""
    row = await conn.fetchrow(
        "select *, now() as now from recharge_attempts where attempt_id = $1 for update", attempt_id
    )
    if row is None:
        raise LookupError(f"no recharge attempt {attempt_id}")
    attempt = Attempt.from_row(row)
    now = attempt.now
    transition = transitions.after_outcome(
        outcome,
        retry_number=attempt.retry_number,
        call_count=max(attempt.call_count, 1),
        now=now,
        retry_backoff_s=backoff.retry_backoff_s,
        unknown_retry_backoff_s=backoff.unknown_retry_backoff_s,
    )
    new_status = transition.status
    if attempt.status is Status.PROCESSING and new_status is Status.PENDING:
        # We only failed to poll a PaymentIntent that exists: it stays processing, polled later.
        new_status = Status.PROCESSING
    if not transitions.is_forward(attempt.status, new_status):
        return Recorded(attempt.company_id, attempt.status, changed=False)
    # A repeated "still processing" (or a failed poll) is not news for the company.
    event_type = (
        transition.event_type if new_status is not attempt.status or new_status is Status.PENDING else None
    )

    payment_intent_id = attempt.payment_intent_id
    if result is not None and result.payment_intent_id is not None:
        if payment_intent_id is not None and payment_intent_id != result.payment_intent_id:
            # One key, one PaymentIntent: this would be a provider bug. Refuse rather than guess.
            raise RuntimeError(
                f"attempt {attempt_id} has PaymentIntent {payment_intent_id}, provider answered "
                f"{result.payment_intent_id}"
            )
        payment_intent_id = result.payment_intent_id

    final = new_status.is_final
    await conn.execute(
        """
        update recharge_attempts
           set status = $2, next_attempt_at = $3, payment_intent_id = $4,
               decline_code = coalesce($5, decline_code), decline_message = coalesce($6, decline_message),
               last_error = coalesce($7, last_error),
               lease_owner = null, lease_expires_at = null,
               settled_at = case when $8 then now() else null end, updated_at = now()
         where attempt_id = $1
        """,
        attempt_id,
        new_status.value,
        transition.next_attempt_at,
        payment_intent_id,
        result.decline_code if result is not None else None,
        result.message if result is not None else None,
        error,
        final,
    )

    unpaid_final = final and new_status is not Status.SUCCEEDED
    fallback = await start_fallback(conn, attempt, outcome) if unpaid_final else None
    # A fallback carries the recharge on: the primary's decline pauses nothing (the fallback's may).
    pause = None if fallback is not None else transition.pause
    if fallback is not None:
        # Not recharge_failed: the recharge goes on (nothing keyed on a failure, suspension, reacts).
        event_type = "recharge_falling_back"
    if unpaid_final and attempt.fallback_of is not None and outcome is not Outcome.SUPERSEDED:
        pause = await pause_after_fallback(conn, attempt, pause)

    credited = False
    if new_status is Status.SUCCEEDED:
        assert payment_intent_id is not None, "a succeeded charge always has a PaymentIntent"
        charged_cents = result.amount_cents if result is not None else None
        sandbox = result is not None and result.sandbox
        await _credit(conn, attempt, payment_intent_id, charged_cents, sandbox=sandbox)
        credited = True
    elif event_type is not None:
        payload: dict[str, Any] = {
            "attempt_id": str(attempt.attempt_id),
            "kind": attempt.kind.value,
            "amount_nanos": attempt.amount_nanos,
            "outcome": outcome.value,
            "status": new_status.value,
            "payment_intent_id": payment_intent_id,
            **attempt_card_fields(attempt),
        }
        if attempt.fallback_of is not None:
            payload["fallback_of"] = str(attempt.fallback_of)
        if fallback is not None:
            payload["fallback_attempt_id"] = str(fallback.attempt_id)
        if result is not None and result.decline_code:
            payload["decline_code"] = result.decline_code
        if result is not None and result.message:
            payload["message"] = result.message
        if new_status is Status.SOFT_DECLINED and pause is None:
            payload["next_retry_at"] = transition.next_attempt_at
            payload["retry_number"] = attempt.retry_number
        elif not final:
            # Same attempt, same key, later.
            payload["next_retry_at"] = transition.next_attempt_at
            payload["same_attempt"] = True
        else:
            payload["next_retry_at"] = None
        if outcome is Outcome.UNKNOWN and error:
            payload["error"] = error
        await emit(conn, attempt.company_id, event_type, payload)
    if fallback is not None:
        await announce(conn, attempt, fallback)
    if pause is not None and not await _card_still_on_file(conn, attempt):
        # The decline is about a card the company has since removed or replaced: the removal paused
        # auto-recharge with its own reason, and a replacement card deserves its own try. Pausing
        # here would overwrite that reason with news about a card nobody will charge again.
        pause = None
    if pause is not None:
        await conn.execute(
            """
            update billing_settings
               set auto_recharge_paused_reason = $2, auto_recharge_paused_at = now(), updated_at = now()
             where company_id = $1
            """,
            attempt.company_id,
            pause.value,
        )
        await emit(
            conn,
            attempt.company_id,
            "recharge_paused",
            {
                "reason": pause.value,
                "attempt_id": str(attempt.attempt_id),
                "kind": attempt.kind.value,
            },
        )
    RECHARGE_ATTEMPTS.labels(outcome=outcome.value).inc()
    log.info(
        "recharge attempt updated",
        company_id=attempt.company_id,
        attempt_id=str(attempt_id),
        outcome=outcome.value,
        status=new_status.value,
        payment_intent_id=payment_intent_id,
        pause=pause.value if pause else None,
    )
    return Recorded(
        attempt.company_id,
        new_status,
        changed=True,
        credited=credited,
        fallback_attempt_id=None if fallback is None else fallback.attempt_id,
    )


async def _card_still_on_file(conn: Conn, attempt: Attempt) -> bool:
    # The settings row lock orders this against a card removal or replacement (which change the
    # settings in the same transaction), so the card read next is the one the pause would apply to.
    # A fallback's recharge is the primary attempt's: the pause is about that card staying the primary.
    await conn.execute("select 1 from billing_settings where company_id = $1 for update", attempt.company_id)
    current = await conn.fetchval(
        "select payment_method_id from payment_cards where company_id = $1 and role = 'primary'",
        attempt.company_id,
    )
    declined = attempt.payment_method_id
    if attempt.fallback_of is not None:
        declined = await conn.fetchval(
            "select payment_method_id from recharge_attempts where company_id = $1 and attempt_id = $2",
            attempt.company_id,
            attempt.fallback_of,
        )
    return bool(current == declined)


async def _credit(
    conn: Conn, attempt: Attempt, payment_intent_id: str, charged_cents: int | None, *, sandbox: bool
) -> None:
    """Credit the wallet for a succeeded PaymentIntent (append_ledger_entry(), then the event), in the
    caller's transaction.

    The unique indexes on the ledger (one credit per PaymentIntent, one per attempt) make a second
    credit impossible even if this were reached twice; the attempt row lock makes that not happen.
    """
    amount_nanos = attempt.amount_nanos
    if charged_cents is not None and charged_cents * NANOS_PER_CENT != amount_nanos:
        # The card paid what the provider says it paid; credit that, and make it loud.
        log.error(
            "charged amount differs from the attempt",
            attempt_id=str(attempt.attempt_id),
            attempt_amount_nanos=amount_nanos,
            charged_cents=charged_cents,
        )
        amount_nanos = charged_cents * NANOS_PER_CENT
    entry_type = "preload_credit" if attempt.kind is Kind.PRELOAD else "recharge_credit"
    what = "Pre-load" if attempt.kind is Kind.PRELOAD else "Auto-recharge"
    description = f"{what} from {card_label(attempt.card_brand, attempt.card_last4)}"
    reference = payment_intent_id
    if sandbox:
        # No money was taken: whoever reads the ledger or a statement must see it.
        description += " (sandbox: no money taken)"
        reference = payment_intent_id if "sandbox" in payment_intent_id else f"sandbox:{payment_intent_id}"
    entry = await conn.fetchrow(
        """
        select sequence, balance_after_nanos
          from append_ledger_entry(p_company_id => $1, p_entry_type => $2, p_amount_nanos => $3,
                                   p_reference => $4, p_description => $5, p_recharge_attempt_id => $6)
        """,
        attempt.company_id,
        entry_type,
        amount_nanos,
        reference,
        description,
        attempt.attempt_id,
    )
    assert entry is not None
    sequence, after = entry["sequence"], entry["balance_after_nanos"]
    await emit(
        conn,
        attempt.company_id,
        "recharge_succeeded",
        {
            "attempt_id": str(attempt.attempt_id),
            "kind": attempt.kind.value,
            "amount_nanos": amount_nanos,
            "payment_intent_id": payment_intent_id,
            "ledger_sequence": sequence,
            "balance_nanos": after,
            "card": card_label(attempt.card_brand, attempt.card_last4),
            **attempt_card_fields(attempt),
            **({"fallback_of": str(attempt.fallback_of)} if attempt.fallback_of is not None else {}),
        },
    )
