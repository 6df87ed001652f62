"""The pure auto-recharge decisions: trigger, amount, cap, backoff, outcomes, forward-only status."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.config import RechargeCeilings
from service.domain.money import NANOS_PER_CENT, usd
from service.recharge import engine, transitions
from service.recharge.engine import Kind, LastAttempt, WalletSnapshot, decide, recharge_multiple
from service.recharge.transitions import Outcome, PauseReason, Status, after_outcome, is_forward

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
CARD = "pm_card_1"
BACKOFF = (3600.0, 21600.0, 86400.0)

BASE = WalletSnapshot(
    balance_nanos=usd(9),
    minimum_balance_nanos=usd(10),
    auto_recharge_enabled=True,
    recharge_amount_nanos=usd(50),
    preload_amount_nanos=usd(50),
    monthly_cap_nanos=None,
    paused_reason=None,
    payment_method_id=CARD,
    first_card_set=True,
    in_flight_nanos=None,
    preload_succeeded=True,
    charged_this_month_nanos=0,
    cap_block_notified=False,
    last_auto=None,
    last_preload=None,
)


def snap(**changes: object) -> WalletSnapshot:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


# ---- amount ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "minimum", "amount", "multiple"),
    [
        (usd(9), usd(10), usd(50), 1),  # just below: one recharge amount
        (usd(-40), usd(10), usd(50), 1),  # exactly one amount lifts it to the minimum
        (usd(-41), usd(10), usd(50), 2),  # one nano-dollar short of that needs two
        (usd(-1000), usd(10), usd(50), 21),  # a burst: 1010 / 50 = 20.2 -> 21, in one charge
        (usd(10), usd(10), usd(50), 1),  # at the minimum (not a trigger, but never 0)
        (usd(0), usd(0), usd(5), 1),
    ],
)
def test_recharge_multiple_is_the_smallest_that_reaches_the_minimum(
    balance: int, minimum: int, amount: int, multiple: int
) -> None:
    assert recharge_multiple(balance, minimum, amount) == multiple


@given(
    balance=st.integers(-(10**15), 10**13),
    minimum=st.integers(0, 10**13),
    cents=st.integers(1, 10**7),
)
def test_recharge_multiple_is_minimal_for_any_wallet(balance: int, minimum: int, cents: int) -> None:
    amount = cents * NANOS_PER_CENT
    k = recharge_multiple(balance, minimum, amount)
    assert k >= 1
    if balance < minimum:
        assert balance + k * amount >= minimum
        assert k == 1 or balance + (k - 1) * amount < minimum


def test_recharge_multiple_rejects_a_zero_amount() -> None:
    with pytest.raises(ValueError):
        recharge_multiple(0, 10, 0)


def test_amount_cents_is_exact_and_refuses_fractions() -> None:
    assert engine.amount_cents(usd(50)) == 5000
    assert engine.amount_cents(NANOS_PER_CENT) == 1
    with pytest.raises(ValueError):
        engine.amount_cents(NANOS_PER_CENT + 1)


# ---- trigger ---------------------------------------------------------------------------------------


def test_below_minimum_with_everything_in_place_charges_one_recharge_amount() -> None:
    decision = decide(BASE, NOW)
    assert decision.charge == engine.Charge(Kind.AUTO, usd(50), retry_number=0, multiple=1)
    assert decision.cap_block is None and decision.reason == ""


def test_burst_far_below_minimum_charges_the_multiple_in_one_charge() -> None:
    decision = decide(snap(balance_nanos=usd(-1000)), NOW)
    assert decision.charge is not None
    assert decision.charge.amount_nanos == usd(50) * 21 and decision.charge.multiple == 21


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"auto_recharge_enabled": False}, "auto_recharge_off"),
        ({"payment_method_id": None}, "no_card"),
        ({"paused_reason": "hard_decline"}, "paused"),
        ({"in_flight_nanos": usd(50)}, "in_flight"),
        ({"balance_nanos": usd(10)}, "above_minimum"),
        ({"balance_nanos": usd(11)}, "above_minimum"),
    ],
)
def test_no_charge_when_a_condition_is_missing(changes: dict[str, object], reason: str) -> None:
    decision = decide(snap(**changes), NOW)
    assert decision.charge is None and decision.reason == reason


def test_in_flight_recharge_blocks_a_second_one_even_far_below_minimum() -> None:
    decision = decide(snap(balance_nanos=usd(-500), in_flight_nanos=usd(50)), NOW)
    assert decision.charge is None and decision.reason == "in_flight"


# ---- pre-load --------------------------------------------------------------------------------------


def test_first_card_without_a_preload_yet_charges_the_preload_first() -> None:
    decision = decide(snap(preload_succeeded=False, preload_amount_nanos=usd(25)), NOW)
    assert decision.charge == engine.Charge(Kind.PRELOAD, usd(25), 0, 1)


def test_preload_does_not_need_auto_recharge_or_a_low_balance() -> None:
    decision = decide(
        snap(
            preload_succeeded=False,
            auto_recharge_enabled=False,
            balance_nanos=usd(0),
            minimum_balance_nanos=0,
        ),
        NOW,
    )
    assert decision.charge is not None and decision.charge.kind is Kind.PRELOAD


@pytest.mark.parametrize(
    "changes",
    [{"preload_amount_nanos": 0}, {"first_card_set": False}, {"preload_succeeded": True}],
)
def test_no_preload_when_zero_not_set_or_done(changes: dict[str, object]) -> None:
    decision = decide(snap(**{"preload_succeeded": False, "balance_nanos": usd(20), **changes}), NOW)
    assert decision.charge is None


def test_preload_waits_for_its_soft_decline_backoff() -> None:
    last = LastAttempt(Status.SOFT_DECLINED, 0, NOW + dt.timedelta(hours=1), CARD)
    decision = decide(snap(preload_succeeded=False, last_preload=last), NOW)
    assert decision.charge is None and decision.reason == "preload_backoff"
    assert decision.wait_until == NOW + dt.timedelta(hours=1)
    later = decide(snap(preload_succeeded=False, last_preload=last), NOW + dt.timedelta(hours=1))
    assert later.charge == engine.Charge(Kind.PRELOAD, usd(50), 1, 1)


# ---- soft-decline series ---------------------------------------------------------------------------


def test_soft_decline_waits_then_retries_as_the_next_attempt_of_the_series() -> None:
    last = LastAttempt(Status.SOFT_DECLINED, 1, NOW + dt.timedelta(seconds=10), CARD)
    waiting = decide(snap(last_auto=last), NOW)
    assert waiting.charge is None and waiting.reason == "soft_decline_backoff"
    ready = decide(snap(last_auto=last), NOW + dt.timedelta(seconds=10))
    assert ready.charge is not None and ready.charge.retry_number == 2


def test_a_new_card_starts_a_fresh_series_without_waiting() -> None:
    last = LastAttempt(Status.SOFT_DECLINED, 2, NOW + dt.timedelta(hours=5), "pm_old_card")
    decision = decide(snap(last_auto=last), NOW)
    assert decision.charge is not None and decision.charge.retry_number == 0


@pytest.mark.parametrize(
    "status", [Status.SUCCEEDED, Status.HARD_DECLINED, Status.REQUIRES_ACTION, Status.EXPIRED]
)
def test_after_anything_but_a_soft_decline_the_series_restarts(status: Status) -> None:
    last = LastAttempt(status, 3, None, CARD)
    decision = decide(snap(last_auto=last), NOW)
    assert decision.charge is not None and decision.charge.retry_number == 0


# ---- monthly cap -----------------------------------------------------------------------------------


def test_charge_within_the_cap_goes_through_and_clears_an_earlier_block() -> None:
    decision = decide(
        snap(monthly_cap_nanos=usd(200), charged_this_month_nanos=usd(150), cap_block_notified=True), NOW
    )
    assert decision.charge is not None and decision.charge.amount_nanos == usd(50)
    assert decision.cap_block is None and decision.clear_cap_block


def test_cap_reached_blocks_and_tells_the_company_once() -> None:
    first = decide(snap(monthly_cap_nanos=usd(200), charged_this_month_nanos=usd(200)), NOW)
    assert first.charge is None and first.reason == "monthly_cap_reached"
    assert first.cap_block == engine.CapBlock(usd(50), 0, usd(200), usd(200), notify=True)
    again = decide(
        snap(monthly_cap_nanos=usd(200), charged_this_month_nanos=usd(200), cap_block_notified=True), NOW
    )
    assert again.cap_block is not None and not again.cap_block.notify and again.charge is None


def test_cap_allows_part_of_a_burst_in_whole_recharge_amounts() -> None:
    # Needs 4 x $50; the cap leaves room for $120: charge 2 x $50 and say the cap held back the rest.
    decision = decide(
        snap(balance_nanos=usd(-180), monthly_cap_nanos=usd(200), charged_this_month_nanos=usd(80)), NOW
    )
    assert decision.charge == engine.Charge(Kind.AUTO, usd(100), 0, 2)
    assert decision.cap_block is not None and decision.cap_block.wanted_nanos == usd(200)
    assert decision.cap_block.allowed_nanos == usd(100) and decision.cap_block.notify


def test_cap_smaller_than_one_recharge_amount_blocks_entirely() -> None:
    decision = decide(snap(monthly_cap_nanos=usd(40)), NOW)
    assert decision.charge is None and decision.cap_block is not None


def test_preload_is_not_limited_by_the_auto_recharge_cap() -> None:
    decision = decide(
        snap(preload_succeeded=False, monthly_cap_nanos=usd(10), charged_this_month_nanos=usd(10)), NOW
    )
    assert decision.charge is not None and decision.charge.kind is Kind.PRELOAD


def test_month_start_is_the_first_of_the_utc_month() -> None:
    assert engine.month_start(NOW) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    # 23:30 on Feb 28 in New York is already March 1 in UTC.
    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert engine.month_start(dt.datetime(2026, 2, 28, 23, 30, tzinfo=new_york)) == dt.datetime(
        2026, 3, 1, tzinfo=dt.UTC
    )


# ---- outcomes --------------------------------------------------------------------------------------


def outcome(o: Outcome, *, retry_number: int = 0, call_count: int = 1) -> transitions.Transition:
    return after_outcome(
        o,
        retry_number=retry_number,
        call_count=call_count,
        now=NOW,
        retry_backoff_s=BACKOFF,
        unknown_retry_backoff_s=(5.0, 30.0, 120.0),
    )


def test_success_is_final_without_pause() -> None:
    assert outcome(Outcome.SUCCEEDED) == transitions.Transition(Status.SUCCEEDED, None, None, None)


def test_processing_waits_on_the_same_attempt() -> None:
    t = outcome(Outcome.PROCESSING)
    assert t.status is Status.PROCESSING and t.pause is None and t.event_type == "recharge_processing"
    assert t.next_attempt_at == NOW + dt.timedelta(seconds=5)


@pytest.mark.parametrize(("calls", "wait_s"), [(1, 5), (2, 30), (3, 120), (4, 120), (50, 120)])
def test_unknown_outcome_retries_the_same_attempt_with_growing_backoff(calls: int, wait_s: float) -> None:
    t = outcome(Outcome.UNKNOWN, call_count=calls)
    assert t.status is Status.PENDING and t.pause is None and t.event_type == "recharge_retrying"
    assert t.next_attempt_at == NOW + dt.timedelta(seconds=wait_s)


def test_authentication_required_pauses_until_the_company_acts() -> None:
    t = outcome(Outcome.REQUIRES_ACTION)
    assert (t.status, t.pause, t.next_attempt_at) == (
        Status.REQUIRES_ACTION,
        PauseReason.AUTHENTICATION_REQUIRED,
        None,
    )


def test_hard_decline_pauses_until_a_new_card() -> None:
    t = outcome(Outcome.HARD_DECLINE)
    assert (t.status, t.pause, t.next_attempt_at) == (Status.HARD_DECLINED, PauseReason.HARD_DECLINE, None)


def test_a_refused_charge_is_final_and_pauses_with_its_own_reason() -> None:
    t = outcome(Outcome.REFUSED)
    assert (t.status, t.pause, t.next_attempt_at, t.event_type) == (
        Status.HARD_DECLINED,
        PauseReason.PROVIDER_REFUSED,
        None,
        "recharge_failed",
    )


@pytest.mark.parametrize(("retry_number", "wait_s"), [(0, 3600), (1, 21600), (2, 86400)])
def test_soft_decline_schedules_a_new_attempt_after_the_backoff(retry_number: int, wait_s: float) -> None:
    t = outcome(Outcome.SOFT_DECLINE, retry_number=retry_number)
    assert t.status is Status.SOFT_DECLINED and t.pause is None
    assert t.next_attempt_at == NOW + dt.timedelta(seconds=wait_s)


def test_soft_decline_after_the_last_backoff_pauses() -> None:
    t = outcome(Outcome.SOFT_DECLINE, retry_number=len(BACKOFF))
    assert t.status is Status.SOFT_DECLINED and t.next_attempt_at is None
    assert t.pause is PauseReason.SOFT_DECLINE_RETRIES_EXHAUSTED


def test_not_found_after_the_window_expires_the_attempt_so_a_new_one_may_follow() -> None:
    t = outcome(Outcome.NOT_FOUND)
    assert (t.status, t.pause, t.next_attempt_at) == (Status.EXPIRED, None, None)


def test_every_outcome_has_a_transition() -> None:
    for o in Outcome:
        assert isinstance(outcome(o), transitions.Transition)


# ---- forward-only status ---------------------------------------------------------------------------

FINAL_FAILURES = [Status.REQUIRES_ACTION, Status.HARD_DECLINED, Status.SOFT_DECLINED, Status.EXPIRED]


@pytest.mark.parametrize("new", list(Status))
def test_nothing_moves_a_success(new: Status) -> None:
    assert not is_forward(Status.SUCCEEDED, new)


@pytest.mark.parametrize("current", [Status.PENDING, Status.PROCESSING, *FINAL_FAILURES])
def test_a_success_always_lands_money_was_taken(current: Status) -> None:
    assert is_forward(current, Status.SUCCEEDED)


@pytest.mark.parametrize("current", FINAL_FAILURES)
@pytest.mark.parametrize("new", [s for s in Status if s is not Status.SUCCEEDED])
def test_a_final_failure_never_changes_except_to_success(current: Status, new: Status) -> None:
    assert not is_forward(current, new)


def test_processing_never_goes_back_to_pending() -> None:
    assert not is_forward(Status.PROCESSING, Status.PENDING)
    assert is_forward(Status.PROCESSING, Status.PROCESSING)
    assert is_forward(Status.PENDING, Status.PROCESSING)


# ---- idempotency window ----------------------------------------------------------------------------


def test_same_key_retries_only_inside_the_idempotency_window() -> None:
    assert transitions.may_retry_same_key(NOW - dt.timedelta(hours=22, minutes=59), NOW)
    assert not transitions.may_retry_same_key(NOW - dt.timedelta(hours=23), NOW)
    assert transitions.IDEMPOTENCY_WINDOW < dt.timedelta(hours=24)  # inside Stripe's 24 h


# ---- deployment ceilings ---------------------------------------------------------------------------

CEILINGS = RechargeCeilings(max_charge_nanos=usd(200), max_daily_nanos=usd(500), max_charges_per_hour=3)


def test_a_burst_is_cut_to_the_largest_multiple_under_the_per_charge_maximum() -> None:
    decision = decide(snap(balance_nanos=usd(-1000)), NOW, CEILINGS)
    assert decision.charge == engine.Charge(Kind.AUTO, usd(200), 0, 4)
    block = decision.limit_block
    assert block is not None and (block.limit, block.wanted_nanos, block.notify) == (
        engine.Limit.MAX_CHARGE,
        usd(1050),
        True,
    )


def test_what_is_left_of_the_day_cuts_then_holds_back_a_charge() -> None:
    cut = decide(snap(balance_nanos=usd(-1000), charged_last_24h_nanos=usd(400)), NOW, CEILINGS)
    assert cut.charge is not None and cut.charge.amount_nanos == usd(100)
    assert cut.limit_block is not None and cut.limit_block.limit is engine.Limit.MAX_DAILY
    held = decide(snap(charged_last_24h_nanos=usd(480), limit_notified=True), NOW, CEILINGS)
    assert held.charge is None and held.reason == "daily_limit_reached"
    assert held.limit_block is not None and not held.limit_block.notify


def test_a_charge_no_ceiling_limits_clears_the_told_mark() -> None:
    decision = decide(snap(limit_notified=True), NOW, CEILINGS)
    assert decision.charge is not None and decision.limit_block is None and decision.clear_limit_block


def test_too_many_charges_in_the_last_hour_pause_instead_of_charging() -> None:
    assert decide(snap(charges_last_hour=2), NOW, CEILINGS).charge is not None
    decision = decide(snap(charges_last_hour=3), NOW, CEILINGS)
    assert decision.charge is None and decision.pause is transitions.PauseReason.VELOCITY_LIMIT
    # Nothing to charge, nothing to pause.
    assert decide(snap(charges_last_hour=3, balance_nanos=usd(50)), NOW, CEILINGS).pause is None


def test_a_pre_load_is_held_back_whole_when_the_day_has_no_room_for_it() -> None:
    decision = decide(snap(preload_succeeded=False, charged_last_24h_nanos=usd(460)), NOW, CEILINGS)
    assert decision.charge is None and decision.limit_block is not None
    assert decision.limit_block.allowed_nanos == 0


def test_a_top_up_is_cut_to_whole_cents_under_the_ceilings() -> None:
    wide_cap = {"monthly_cap_nanos": None}
    top_up = snap(balance_nanos=usd(-1000), top_up_target_nanos=usd(100), **wide_cap)
    decision = decide(top_up, NOW, CEILINGS)
    assert decision.charge == engine.Charge(Kind.AUTO, usd(200), 0, 1)
    assert decision.limit_block is not None and decision.limit_block.wanted_nanos == usd(1100)
    # What is left of the day, in whole cents (a fraction of a cent is never charged).
    late = snap(
        balance_nanos=usd(-1000),
        top_up_target_nanos=usd(100),
        charged_last_24h_nanos=usd(400) + 5_000_000,
        **wide_cap,
    )
    cut = decide(late, NOW, CEILINGS)
    assert cut.charge is not None and cut.charge.amount_nanos == usd(99) + 990_000_000
