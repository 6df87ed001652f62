"""What a provider's answer does to a charge attempt: the attempt states, the outcomes a call can
have, and the transition from one to the next. Pure: the loop records what ``after_outcome`` says.
Unit-tested in tests/recharge/test_engine.py.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

# Stripe keeps an idempotency key for at least 24 hours. Inside this window an attempt whose outcome
# is unknown is retried with the same key; after it, the key may be forgotten, so the PaymentIntent is
# looked up by its metadata instead. An hour of margin covers clock skew and slow retries.
IDEMPOTENCY_WINDOW = dt.timedelta(hours=23)

# Between polls of a PaymentIntent that is still processing, and between same-key retries after an
# unknown outcome, when no schedule is configured.
DEFAULT_UNKNOWN_RETRY_BACKOFF_S: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0)


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    REQUIRES_ACTION = "requires_action"
    HARD_DECLINED = "hard_declined"
    SOFT_DECLINED = "soft_declined"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self not in (Status.PENDING, Status.PROCESSING)


class Outcome(enum.StrEnum):
    """What one provider call said about an attempt."""

    SUCCEEDED = "succeeded"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    HARD_DECLINE = "hard_decline"
    SOFT_DECLINE = "soft_decline"
    # Network error, timeout, 5xx, 409 or 429: the charge may or may not exist.
    UNKNOWN = "unknown"
    # After the idempotency window, the lookup by metadata found no PaymentIntent: nothing was charged.
    NOT_FOUND = "not_found"
    # The provider refused the charge request itself (e.g. the card was detached meanwhile): nothing
    # was charged, and sending it again would be refused again.
    REFUSED = "refused"
    # A fallback's primary was paid after all (its cardholder completed 3-D Secure late): the backup
    # card is not charged, and the fallback ends with nothing charged and nothing paused.
    SUPERSEDED = "superseded"


class PauseReason(enum.StrEnum):
    """Written to billing_settings.auto_recharge_paused_reason; setting a card again clears it."""

    AUTHENTICATION_REQUIRED = "authentication_required"
    HARD_DECLINE = "hard_decline"
    SOFT_DECLINE_RETRIES_EXHAUSTED = "soft_decline_retries_exhausted"
    PROVIDER_REFUSED = "provider_refused"
    # More charges in an hour than the deployment allows (RechargeCeilings.max_charges_per_hour).
    VELOCITY_LIMIT = "velocity_limit"


@dataclass(frozen=True, slots=True)
class Transition:
    """What an outcome does to an attempt (and maybe to the company's auto-recharge)."""

    status: Status
    # Not final: when to call the provider again. soft_declined: when a new attempt may be made.
    next_attempt_at: dt.datetime | None
    pause: PauseReason | None
    # The wallet event to emit, or None (a success emits recharge_succeeded when crediting).
    event_type: str | None


def after_outcome(
    outcome: Outcome,
    *,
    retry_number: int,
    call_count: int,
    now: dt.datetime,
    retry_backoff_s: tuple[float, ...],
    unknown_retry_backoff_s: tuple[float, ...] = DEFAULT_UNKNOWN_RETRY_BACKOFF_S,
) -> Transition:
    """The attempt's next state after one provider answer.

    ``call_count`` counts provider calls including this one; ``retry_number`` is the attempt's place
    in a series of soft declines (0 for the first attempt).
    """
    if outcome is Outcome.SUCCEEDED:
        return Transition(Status.SUCCEEDED, None, None, None)
    if outcome is Outcome.NOT_FOUND:
        # Nothing was charged; a new attempt (and a new key) may follow at once if still needed.
        return Transition(Status.EXPIRED, None, None, "recharge_failed")
    if outcome is Outcome.SUPERSEDED:
        # Not a failure: the recharge was paid by its primary attempt.
        return Transition(Status.EXPIRED, None, None, "recharge_fallback_not_needed")
    if outcome in (Outcome.PROCESSING, Outcome.UNKNOWN):
        step = unknown_retry_backoff_s[min(max(call_count, 1), len(unknown_retry_backoff_s)) - 1]
        status = Status.PROCESSING if outcome is Outcome.PROCESSING else Status.PENDING
        # An unknown outcome is not a failed recharge (the charge may well have gone through): it is
        # reported as retrying, so nothing keyed on recharge_failed (wallet suspension) reacts to a
        # network blip.
        event = "recharge_processing" if outcome is Outcome.PROCESSING else "recharge_retrying"
        return Transition(status, now + dt.timedelta(seconds=step), None, event)
    if outcome is Outcome.REQUIRES_ACTION:
        return Transition(
            Status.REQUIRES_ACTION, None, PauseReason.AUTHENTICATION_REQUIRED, "recharge_failed"
        )
    if outcome is Outcome.HARD_DECLINE:
        return Transition(Status.HARD_DECLINED, None, PauseReason.HARD_DECLINE, "recharge_failed")
    if outcome is Outcome.REFUSED:
        # Final like a hard decline (a new card, or an operator, has to act), and said so.
        return Transition(Status.HARD_DECLINED, None, PauseReason.PROVIDER_REFUSED, "recharge_failed")
    assert outcome is Outcome.SOFT_DECLINE
    if retry_number < len(retry_backoff_s):
        retry_at = now + dt.timedelta(seconds=retry_backoff_s[retry_number])
        return Transition(Status.SOFT_DECLINED, retry_at, None, "recharge_failed")
    return Transition(
        Status.SOFT_DECLINED, None, PauseReason.SOFT_DECLINE_RETRIES_EXHAUSTED, "recharge_failed"
    )


def falls_back(outcome: Outcome) -> bool:
    """Whether a primary attempt's answer sends the same recharge to the backup card: a hard decline
    or a card that needs authentication (final for an off-session charge). A soft decline is retried
    on the same card; a refused request, an expiry or an unknown outcome say nothing about the card."""
    return outcome in (Outcome.HARD_DECLINE, Outcome.REQUIRES_ACTION)


def may_retry_same_key(created_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether the provider still remembers the attempt's idempotency key (see IDEMPOTENCY_WINDOW).

    Counted from the attempt's creation, which precedes its first request: conservative.
    """
    return now - created_at < IDEMPOTENCY_WINDOW


def is_forward(current: Status, new: Status) -> bool:
    """Whether a status change moves an attempt forward.

    A success wins over everything but itself: money was taken, so the wallet must be credited even
    if the attempt had been marked failed (e.g. the customer completed 3-D Secure later). Otherwise a
    final status never changes (a late failure never undoes a success), and a PaymentIntent known to
    exist (processing) never goes back to "maybe sent" (pending).
    """
    if current is Status.SUCCEEDED:
        return False
    if new is Status.SUCCEEDED:
        return True
    if current.is_final:
        return False
    return not (current is Status.PROCESSING and new is Status.PENDING)
