"""The rules of the billing settings, checked on the settings as they would be after a change.

A rule that ties two fields together (the monthly cap is at least the recharge amount) holds whichever
of the two a request changes; only the fields a request changes are checked on their own, so a stored
value that a later deployment's bounds no longer allow does not block changing something else.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.errors import FieldViolation
from service.domain.money import NANOS_PER_CENT, is_whole_cents, usd
from service.domain.settings import (
    BALANCE_ALERT_THRESHOLDS,
    MINIMUM_BALANCE,
    MONTHLY_RECHARGE_CAP,
    PRELOAD_AMOUNT,
    RECHARGE_AMOUNT,
    RECHARGE_MODE,
    RECHARGE_MODES,
    TARGET_BALANCE,
    TOP_UP_TO_TARGET,
    SettingsValues,
    dollars,
)

MAX_TARGET_BALANCE_NANOS = usd(1_000_000)
MAX_MINIMUM_BALANCE_NANOS = usd(100_000)
# Far above any sensible cap; it keeps every amount well inside a bigint.
MAX_MONTHLY_RECHARGE_CAP_NANOS = usd(10_000_000)
MAX_BALANCE_ALERT_THRESHOLDS = 5
MAX_BALANCE_ALERT_THRESHOLD_NANOS = usd(10_000_000)


@dataclass(frozen=True)
class RechargeBounds:
    """The deployment's bounds for one automatic recharge (Config.recharge_amount_min/max_nanos)."""

    min_nanos: int
    max_nanos: int


def _check_amount(
    out: list[FieldViolation], field: str, amount_nanos: int, low_nanos: int, high_nanos: int, what: str
) -> bool:
    """Sign, whole cents and range; True when the amount passed."""
    if amount_nanos < 0:
        out.append(FieldViolation(field, f"must not be negative, got {dollars(amount_nanos)}"))
    elif not is_whole_cents(amount_nanos):
        out.append(
            FieldViolation(
                field,
                f"must be a whole number of cents, got {dollars(amount_nanos)} "
                f"(nanos must be a multiple of {NANOS_PER_CENT:,})",
            )
        )
    elif not low_nanos <= amount_nanos <= high_nanos:
        out.append(
            FieldViolation(
                field,
                f"{what} must be between {dollars(low_nanos)} and {dollars(high_nanos)}, "
                f"got {dollars(amount_nanos)}",
            )
        )
    else:
        return True
    return False


def check_settings(
    new: SettingsValues, changed: frozenset[str], bounds: RechargeBounds, field_prefix: str = "settings."
) -> list[FieldViolation]:
    """Every rule the changed fields of `new` break, each naming the request field."""
    out: list[FieldViolation] = []
    valid: set[str] = set()
    if MINIMUM_BALANCE in changed and _check_amount(
        out,
        field_prefix + MINIMUM_BALANCE,
        new.minimum_balance_nanos,
        0,
        MAX_MINIMUM_BALANCE_NANOS,
        "the minimum balance",
    ):
        valid.add(MINIMUM_BALANCE)
    if RECHARGE_AMOUNT in changed and _check_amount(
        out,
        field_prefix + RECHARGE_AMOUNT,
        new.recharge_amount_nanos,
        bounds.min_nanos,
        bounds.max_nanos,
        "the recharge amount",
    ):
        valid.add(RECHARGE_AMOUNT)
    if PRELOAD_AMOUNT in changed:
        preload = new.preload_amount_nanos
        if preload == 0:
            valid.add(PRELOAD_AMOUNT)  # no pre-load
        elif _check_amount(
            out,
            field_prefix + PRELOAD_AMOUNT,
            preload,
            bounds.min_nanos,
            bounds.max_nanos,
            "the pre-load amount ($0.00 for none)",
        ):
            valid.add(PRELOAD_AMOUNT)
    cap = new.monthly_recharge_cap_nanos
    if MONTHLY_RECHARGE_CAP in changed and cap is not None:
        if cap == 0:
            out.append(
                FieldViolation(
                    field_prefix + MONTHLY_RECHARGE_CAP,
                    "must be more than $0.00; leave it unset (and name it in update_mask) for no cap",
                )
            )
        elif _check_amount(
            out,
            field_prefix + MONTHLY_RECHARGE_CAP,
            cap,
            0,
            MAX_MONTHLY_RECHARGE_CAP_NANOS,
            "the monthly recharge cap",
        ):
            valid.add(MONTHLY_RECHARGE_CAP)
    # The cross-field rule, on the resulting settings, reported on the field the caller changed.
    cap_touched = MONTHLY_RECHARGE_CAP in valid or RECHARGE_AMOUNT in valid
    if cap_touched and cap is not None and cap < new.recharge_amount_nanos:
        if MONTHLY_RECHARGE_CAP in valid:
            out.append(
                FieldViolation(
                    field_prefix + MONTHLY_RECHARGE_CAP,
                    f"must be at least the recharge amount ({dollars(new.recharge_amount_nanos)}), "
                    f"got {dollars(cap)}; otherwise not even one recharge fits in a month",
                )
            )
        else:
            out.append(
                FieldViolation(
                    field_prefix + RECHARGE_AMOUNT,
                    f"must not exceed the monthly recharge cap ({dollars(cap)}), got "
                    f"{dollars(new.recharge_amount_nanos)}; raise or clear the cap in the same request",
                )
            )
    if RECHARGE_MODE in changed or TARGET_BALANCE in changed or MINIMUM_BALANCE in changed:
        _check_target(out, field_prefix, new, changed, bounds)
    if BALANCE_ALERT_THRESHOLDS in changed:
        _check_thresholds(out, field_prefix + BALANCE_ALERT_THRESHOLDS, new.balance_alert_thresholds_nanos)
    return out


def _check_thresholds(out: list[FieldViolation], field: str, thresholds: tuple[int, ...]) -> None:
    if len(thresholds) > MAX_BALANCE_ALERT_THRESHOLDS:
        out.append(
            FieldViolation(field, f"at most {MAX_BALANCE_ALERT_THRESHOLDS} thresholds, got {len(thresholds)}")
        )
        return
    for index, amount in enumerate(thresholds):
        _check_amount(
            out,
            f"{field}[{index}]",
            amount,
            0,
            MAX_BALANCE_ALERT_THRESHOLD_NANOS,
            "a balance alert threshold",
        )
    if len(set(thresholds)) != len(thresholds):
        out.append(FieldViolation(field, "must not name the same amount twice"))


def _check_target(
    out: list[FieldViolation],
    prefix: str,
    new: SettingsValues,
    changed: frozenset[str],
    bounds: RechargeBounds,
) -> None:
    """A top-up needs a target far enough above the minimum that each top-up charges at least the
    smallest recharge amount; checked on the resulting settings, reported on a field the request named."""
    target = new.target_balance_nanos
    if new.recharge_mode not in RECHARGE_MODES:
        out.append(FieldViolation(prefix + RECHARGE_MODE, f"must be one of {', '.join(RECHARGE_MODES)}"))
        return
    if TARGET_BALANCE in changed and target is not None:
        if not _check_amount(
            out, prefix + TARGET_BALANCE, target, 0, MAX_TARGET_BALANCE_NANOS, "the target balance"
        ):
            return
    if new.recharge_mode != TOP_UP_TO_TARGET:
        return
    field = prefix + (TARGET_BALANCE if TARGET_BALANCE in changed else RECHARGE_MODE)
    if target is None:
        out.append(
            FieldViolation(field, "a top-up to a target needs target_balance; set it in the same request")
        )
    elif target < new.minimum_balance_nanos + bounds.min_nanos:
        out.append(
            FieldViolation(
                field,
                f"the target balance must be at least the minimum balance plus the smallest recharge "
                f"({dollars(new.minimum_balance_nanos + bounds.min_nanos)}), got {dollars(target)}",
            )
        )
