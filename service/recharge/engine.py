"""Pure auto-recharge decisions: whether to charge, and how much, within the settings and the ceilings.

No I/O and no clock: ``planning.py`` reads a ``WalletSnapshot`` under the wallet's row lock, asks
``decide``, and writes what it says; the loop maps a provider answer through
``transitions.after_outcome``.
Everything here is exhaustively unit-tested (tests/recharge/test_engine.py).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace

from service.config import RechargeCeilings
from service.domain.money import NANOS_PER_CENT

from .transitions import PauseReason, Status

# The ceilings load_config({}) gives, for callers that were not handed the deployment's.
DEFAULT_CEILINGS = RechargeCeilings()


class Kind(enum.StrEnum):
    AUTO = "auto"  # the balance fell below the minimum
    PRELOAD = "preload"  # the company set its first card


@dataclass(frozen=True, slots=True)
class LastAttempt:
    """The newest final attempt of one kind for the wallet, when it matters to the next decision."""

    status: Status
    retry_number: int
    # soft_declined: when the next attempt may be made.
    retry_at: dt.datetime | None
    payment_method_id: str


@dataclass(frozen=True, slots=True)
class WalletSnapshot:
    """Everything ``decide`` needs, read in one transaction under the wallet row lock."""

    balance_nanos: int
    minimum_balance_nanos: int
    auto_recharge_enabled: bool
    recharge_amount_nanos: int
    preload_amount_nanos: int
    monthly_cap_nanos: int | None
    paused_reason: str | None
    # The card on file (None: no card, or no provider customer yet).
    payment_method_id: str | None
    first_card_set: bool
    # Amount of the attempt not yet final, if any (the database allows at most one).
    in_flight_nanos: int | None
    preload_succeeded: bool
    # What auto-recharge attempts created this calendar month (UTC) charged or may still charge.
    charged_this_month_nanos: int
    cap_block_notified: bool
    last_auto: LastAttempt | None
    last_preload: LastAttempt | None
    # What automatic charges (of either kind) created in the last 24 hours charged or may still charge.
    charged_last_24h_nanos: int = 0
    # Charge attempts created for the company in the last hour.
    charges_last_hour: int = 0
    # recharge_limited has been emitted and no unlimited charge happened since.
    limit_notified: bool = False
    # What the active holds reserve: the recharge follows the available balance (balance - held), so a
    # long call's hold starts it before the call has used the money.
    held_nanos: int = 0
    # None: add the recharge amount (a multiple of it); else bring the available balance up to this.
    top_up_target_nanos: int | None = None

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos - self.held_nanos


@dataclass(frozen=True, slots=True)
class Charge:
    kind: Kind
    amount_nanos: int
    retry_number: int
    # How many recharge amounts this is (1 normally; more after a burst of usage). 1 for a pre-load.
    multiple: int


@dataclass(frozen=True, slots=True)
class CapBlock:
    """The monthly cap held back (part of) a recharge."""

    wanted_nanos: int
    allowed_nanos: int
    cap_nanos: int
    charged_this_month_nanos: int
    # Emit recharge_blocked_by_cap now (False: the company has already been told).
    notify: bool


class Limit(enum.StrEnum):
    """A deployment ceiling (RechargeCeilings) that no company setting lifts."""

    MAX_CHARGE = "max_charge"
    MAX_DAILY = "max_daily"


@dataclass(frozen=True, slots=True)
class LimitBlock:
    """A deployment ceiling cut (part of) a charge, or held it back (allowed_nanos == 0)."""

    limit: Limit
    wanted_nanos: int
    allowed_nanos: int
    limit_nanos: int
    charged_last_24h_nanos: int
    # Emit recharge_limited now (False: the company has already been told).
    notify: bool


@dataclass(frozen=True, slots=True)
class Decision:
    charge: Charge | None
    cap_block: CapBlock | None
    # Why nothing is charged, for logs and tests ('' when charging).
    reason: str
    # The wallet is waiting for a soft-decline backoff until then.
    wait_until: dt.datetime | None = None
    # A charge the cap allowed in full: clear the "company was told" mark.
    clear_cap_block: bool = False
    limit_block: LimitBlock | None = None
    # A charge no ceiling limited: clear the "company was told" mark of recharge_limited.
    clear_limit_block: bool = False
    # Pause auto-recharge (velocity): written with a recharge_paused event.
    pause: PauseReason | None = None


def recharge_multiple(balance_nanos: int, minimum_balance_nanos: int, recharge_amount_nanos: int) -> int:
    """The smallest k >= 1 such that balance + k * recharge amount >= minimum (one charge, not k)."""
    if recharge_amount_nanos <= 0:
        raise ValueError("the recharge amount must be positive")
    shortfall = minimum_balance_nanos - balance_nanos
    return max(1, -(-shortfall // recharge_amount_nanos))


def month_start(now: dt.datetime) -> dt.datetime:
    """Start of the calendar month (UTC) that ``now`` falls in; the monthly cap counts from it."""
    utc = now.astimezone(dt.UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _backoff(
    last: LastAttempt | None, payment_method_id: str, now: dt.datetime
) -> tuple[int, dt.datetime | None]:
    """(retry number for a new attempt, time to wait until) after the newest final attempt."""
    if last is None or last.status is not Status.SOFT_DECLINED or last.payment_method_id != payment_method_id:
        # A success, a failure that paused (and was then cleared by a new card), or another card:
        # a fresh series.
        return 0, None
    if last.retry_at is not None and now < last.retry_at:
        return last.retry_number + 1, last.retry_at
    return last.retry_number + 1, None


def decide(
    snapshot: WalletSnapshot, now: dt.datetime, ceilings: RechargeCeilings = DEFAULT_CEILINGS
) -> Decision:
    """Whether to create a charge attempt for this wallet now, of what kind and amount: what the
    company's settings ask for, then bounded by the deployment's ceilings, which they cannot lift."""
    return apply_ceilings(snapshot, _by_settings(snapshot, now), ceilings)


def apply_ceilings(s: WalletSnapshot, wanted: Decision, ceilings: RechargeCeilings) -> Decision:
    """Velocity first (too many charges in the last hour pause auto-recharge), then the per-charge and
    per-24-hours maximums: a charge is cut to the largest whole multiple of the recharge amount that
    fits both, or held back, and the company is told once (recharge_limited)."""
    charge = wanted.charge
    if charge is None:
        return wanted
    if s.charges_last_hour >= ceilings.max_charges_per_hour:
        return Decision(None, None, "velocity_limit", pause=PauseReason.VELOCITY_LIMIT)
    daily_room = max(0, ceilings.max_daily_nanos - s.charged_last_24h_nanos)
    room = min(ceilings.max_charge_nanos, daily_room)
    if charge.amount_nanos <= room:
        return replace(wanted, clear_limit_block=s.limit_notified)
    if charge.kind is Kind.PRELOAD:
        # A pre-load is the amount the company chose to start with: whole, or not at all.
        allowed_multiple, allowed_nanos = 0, 0
    elif s.top_up_target_nanos is not None:
        # A top-up is not a multiple of anything: cut it to whole cents.
        allowed_nanos = room // NANOS_PER_CENT * NANOS_PER_CENT
        allowed_multiple = 1 if allowed_nanos else 0
    else:
        allowed_multiple = room // s.recharge_amount_nanos
        allowed_nanos = allowed_multiple * s.recharge_amount_nanos
    by_charge = ceilings.max_charge_nanos < charge.amount_nanos and ceilings.max_charge_nanos <= daily_room
    block = LimitBlock(
        limit=Limit.MAX_CHARGE if by_charge else Limit.MAX_DAILY,
        wanted_nanos=charge.amount_nanos,
        allowed_nanos=allowed_nanos,
        limit_nanos=ceilings.max_charge_nanos if by_charge else ceilings.max_daily_nanos,
        charged_last_24h_nanos=s.charged_last_24h_nanos,
        notify=not s.limit_notified,
    )
    if allowed_nanos == 0:
        return replace(wanted, charge=None, reason="daily_limit_reached", limit_block=block)
    cut = Charge(charge.kind, allowed_nanos, charge.retry_number, allowed_multiple)
    return replace(wanted, charge=cut, limit_block=block)


def _by_settings(snapshot: WalletSnapshot, now: dt.datetime) -> Decision:
    s = snapshot
    if s.in_flight_nanos is not None:
        return Decision(None, None, "in_flight")
    if s.payment_method_id is None:
        return Decision(None, None, "no_card")
    if s.paused_reason is not None:
        return Decision(None, None, "paused")

    # The pre-load comes first: it is what a first card is for, and it usually lifts the wallet above
    # its minimum by itself.
    if s.first_card_set and s.preload_amount_nanos > 0 and not s.preload_succeeded:
        retry_number, wait_until = _backoff(s.last_preload, s.payment_method_id, now)
        if wait_until is not None:
            return Decision(None, None, "preload_backoff", wait_until=wait_until)
        return Decision(Charge(Kind.PRELOAD, s.preload_amount_nanos, retry_number, 1), None, "")

    if not s.auto_recharge_enabled:
        return Decision(None, None, "auto_recharge_off")
    if s.available_nanos >= s.minimum_balance_nanos:
        return Decision(None, None, "above_minimum")
    retry_number, wait_until = _backoff(s.last_auto, s.payment_method_id, now)
    if wait_until is not None:
        return Decision(None, None, "soft_decline_backoff", wait_until=wait_until)

    if s.top_up_target_nanos is not None:
        return _top_up(s, retry_number)
    multiple = recharge_multiple(s.available_nanos, s.minimum_balance_nanos, s.recharge_amount_nanos)
    wanted_nanos = multiple * s.recharge_amount_nanos
    if s.monthly_cap_nanos is None or s.charged_this_month_nanos + wanted_nanos <= s.monthly_cap_nanos:
        charge = Charge(Kind.AUTO, wanted_nanos, retry_number, multiple)
        return Decision(charge, None, "", clear_cap_block=s.cap_block_notified)

    # Never past the cap: charge the largest whole multiple that still fits, if any.
    room_nanos = max(0, s.monthly_cap_nanos - s.charged_this_month_nanos)
    allowed_multiple = room_nanos // s.recharge_amount_nanos
    allowed_nanos = allowed_multiple * s.recharge_amount_nanos
    block = CapBlock(
        wanted_nanos=wanted_nanos,
        allowed_nanos=allowed_nanos,
        cap_nanos=s.monthly_cap_nanos,
        charged_this_month_nanos=s.charged_this_month_nanos,
        notify=not s.cap_block_notified,
    )
    if allowed_multiple == 0:
        return Decision(None, block, "monthly_cap_reached")
    return Decision(Charge(Kind.AUTO, allowed_nanos, retry_number, allowed_multiple), block, "")


def top_up_amount(available_nanos: int, target_nanos: int) -> int:
    """What brings `available_nanos` up to `target_nanos`, rounded up to a whole cent (cards charge cents)."""
    shortfall = max(0, target_nanos - available_nanos)
    return -(-shortfall // NANOS_PER_CENT) * NANOS_PER_CENT


def _top_up(s: WalletSnapshot, retry_number: int) -> Decision:
    """A top-up to the target: one charge of the shortfall, cut to the monthly cap in whole cents."""
    assert s.top_up_target_nanos is not None
    wanted_nanos = top_up_amount(s.available_nanos, s.top_up_target_nanos)
    if s.monthly_cap_nanos is None or s.charged_this_month_nanos + wanted_nanos <= s.monthly_cap_nanos:
        return Decision(
            Charge(Kind.AUTO, wanted_nanos, retry_number, 1), None, "", clear_cap_block=s.cap_block_notified
        )
    room_nanos = max(0, s.monthly_cap_nanos - s.charged_this_month_nanos)
    allowed_nanos = room_nanos // NANOS_PER_CENT * NANOS_PER_CENT
    block = CapBlock(
        wanted_nanos=wanted_nanos,
        allowed_nanos=allowed_nanos,
        cap_nanos=s.monthly_cap_nanos,
        charged_this_month_nanos=s.charged_this_month_nanos,
        notify=not s.cap_block_notified,
    )
    if allowed_nanos == 0:
        return Decision(None, block, "monthly_cap_reached")
    return Decision(Charge(Kind.AUTO, allowed_nanos, retry_number, 1), block, "")


def amount_cents(amount_nanos: int) -> int:
    """Card amounts are whole cents (the settings enforce it, the table checks it again)."""
    cents, rest = divmod(amount_nanos, NANOS_PER_CENT)
    if rest:
        raise ValueError(f"{amount_nanos} nanos is not a whole number of cents")
    return cents
