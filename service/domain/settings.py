"""Billing settings: the writable fields, their rules and how their values read in the audit trail.

Pure code. Validation looks at the settings as they would be after the change (the stored values
merged with the requested ones), so a rule that ties two fields together (the monthly cap is at least
the recharge amount) holds whichever of the two a request changes. Only the fields a request changes
are checked on their own: a stored value that a later deployment's bounds no longer allow does not
block changing something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.domain.errors import FieldViolation
from service.domain.money import NANOS_PER_CENT, NANOS_PER_USD, is_whole_cents, usd
from service.domain.principals import Role

MINIMUM_BALANCE = "minimum_balance"
RECHARGE_AMOUNT = "recharge_amount"
AUTO_RECHARGE_ENABLED = "auto_recharge_enabled"
PRELOAD_AMOUNT = "preload_amount"
MONTHLY_RECHARGE_CAP = "monthly_recharge_cap"
BALANCE_ALERT_THRESHOLDS = "balance_alert_thresholds"
RECHARGE_MODE = "recharge_mode"
TARGET_BALANCE = "target_balance"
# recharge_mode values.
FIXED_AMOUNT = "fixed_amount"
TOP_UP_TO_TARGET = "top_up_to_target"
RECHARGE_MODES = (FIXED_AMOUNT, TOP_UP_TO_TARGET)
MAX_TARGET_BALANCE_NANOS = usd(1_000_000)
# The fields UpdateBillingSettings may change, in the order the audit trail lists them.
WRITABLE_FIELDS = (
    MINIMUM_BALANCE,
    RECHARGE_AMOUNT,
    AUTO_RECHARGE_ENABLED,
    PRELOAD_AMOUNT,
    MONTHLY_RECHARGE_CAP,
    BALANCE_ALERT_THRESHOLDS,
    RECHARGE_MODE,
    TARGET_BALANCE,
)
MONEY_FIELDS = frozenset(
    {MINIMUM_BALANCE, RECHARGE_AMOUNT, PRELOAD_AMOUNT, MONTHLY_RECHARGE_CAP, TARGET_BALANCE}
)

MAX_MINIMUM_BALANCE_NANOS = usd(100_000)
# Far above any sensible cap; it keeps every amount well inside a bigint.
MAX_MONTHLY_RECHARGE_CAP_NANOS = usd(10_000_000)
MAX_BALANCE_ALERT_THRESHOLDS = 5
MAX_BALANCE_ALERT_THRESHOLD_NANOS = usd(10_000_000)

# A setting's value: an amount in nanos, a flag, none (no cap), or the balance alert thresholds.
SettingValue = int | bool | str | None | tuple[int, ...]

# Why auto-recharge is paused, as stored in billing_settings.auto_recharge_paused_reason.
PAUSED_NO_CARD = "no_card"
PAUSED_CARD_REMOVED = "card_removed"
# Every reason the contract names (the recharge engine's own are service/recharge/transitions.PauseReason).
PAUSED_REASONS = (
    PAUSED_NO_CARD,
    PAUSED_CARD_REMOVED,
    "authentication_required",
    "hard_decline",
    "soft_decline_retries_exhausted",
    "monthly_cap_reached",
    "provider_refused",
    "velocity_limit",
)


@dataclass(frozen=True)
class RechargeBounds:
    """The deployment's bounds for one automatic recharge (Config.recharge_amount_min/max_nanos)."""

    min_nanos: int
    max_nanos: int


@dataclass(frozen=True)
class ApprovalLevels:
    """Above these, raising the minimum balance or the monthly cap (or clearing the cap) needs the
    finance or admin role (Config.recharge_ceilings.approval_*)."""

    minimum_balance_nanos: int = usd(1_000)
    monthly_cap_nanos: int = usd(10_000)


# The roles that may raise a limit above its approval level.
APPROVER_ROLES = frozenset({Role.FINANCE.value, Role.ADMIN.value})


def may_raise_above_approval_level(roles: frozenset[str] | None) -> bool:
    """The one decision whether a caller may raise a limit above its approval level.

    `roles` is None while authentication is off (BILLING_AUTH=off) and callers carry no roles: then every
    caller may (the raise is still reported as a wallet event and in the audit trail). Once callers
    carry roles, only finance and admin may.
    """
    if roles is None:
        return True
    return not APPROVER_ROLES.isdisjoint(roles)


@dataclass(frozen=True)
class LimitRaise:
    field: str
    old_nanos: int | None  # None: no cap
    new_nanos: int | None  # None: the cap cleared
    approval_level_nanos: int


def raises_above_approval(
    before: SettingsValues, after: SettingsValues, levels: ApprovalLevels
) -> list[LimitRaise]:
    """The limits a change raises to above their approval level (clearing the cap raises it to none)."""
    out: list[LimitRaise] = []
    old_min, new_min = before.minimum_balance_nanos, after.minimum_balance_nanos
    if new_min > old_min and new_min > levels.minimum_balance_nanos:
        out.append(LimitRaise(MINIMUM_BALANCE, old_min, new_min, levels.minimum_balance_nanos))
    old_cap, new_cap = before.monthly_recharge_cap_nanos, after.monthly_recharge_cap_nanos
    raised_cap = old_cap is not None and (
        new_cap is None or (new_cap > old_cap and new_cap > levels.monthly_cap_nanos)
    )
    if raised_cap:
        out.append(LimitRaise(MONTHLY_RECHARGE_CAP, old_cap, new_cap, levels.monthly_cap_nanos))
    return out


@dataclass(frozen=True)
class SettingsValues:
    minimum_balance_nanos: int
    recharge_amount_nanos: int
    auto_recharge_enabled: bool
    preload_amount_nanos: int
    # None: no cap.
    monthly_recharge_cap_nanos: int | None
    # Ascending, distinct.
    balance_alert_thresholds_nanos: tuple[int, ...] = ()
    recharge_mode: str = FIXED_AMOUNT
    # None: never set.
    target_balance_nanos: int | None = None

    def value_of(self, name: str) -> SettingValue:
        return {
            MINIMUM_BALANCE: self.minimum_balance_nanos,
            RECHARGE_AMOUNT: self.recharge_amount_nanos,
            AUTO_RECHARGE_ENABLED: self.auto_recharge_enabled,
            PRELOAD_AMOUNT: self.preload_amount_nanos,
            MONTHLY_RECHARGE_CAP: self.monthly_recharge_cap_nanos,
            BALANCE_ALERT_THRESHOLDS: self.balance_alert_thresholds_nanos,
            RECHARGE_MODE: self.recharge_mode,
            TARGET_BALANCE: self.target_balance_nanos,
        }[name]

    def with_changes(self, changes: Mapping[str, SettingValue]) -> SettingsValues:
        merged: dict[str, SettingValue] = {name: self.value_of(name) for name in WRITABLE_FIELDS}
        merged.update(changes)
        thresholds = merged.pop(BALANCE_ALERT_THRESHOLDS)
        assert isinstance(thresholds, tuple)
        mode = merged.pop(RECHARGE_MODE)
        assert isinstance(mode, str)
        scalars: dict[str, int | bool | None] = {}
        for name, value in merged.items():
            assert not isinstance(value, (tuple, str)), name
            scalars[name] = value
        cap = scalars[MONTHLY_RECHARGE_CAP]
        return SettingsValues(
            minimum_balance_nanos=int(scalars[MINIMUM_BALANCE] or 0),
            recharge_amount_nanos=int(scalars[RECHARGE_AMOUNT] or 0),
            auto_recharge_enabled=bool(scalars[AUTO_RECHARGE_ENABLED]),
            preload_amount_nanos=int(scalars[PRELOAD_AMOUNT] or 0),
            monthly_recharge_cap_nanos=None if cap is None else int(cap),
            # Kept as given until checked (check_settings refuses duplicates), then stored ascending.
            balance_alert_thresholds_nanos=thresholds,
            recharge_mode=mode,
            target_balance_nanos=None
            if scalars[TARGET_BALANCE] is None
            else int(scalars[TARGET_BALANCE] or 0),
        )


def dollars(amount_nanos: int) -> str:
    """For people: "$1,234.50"; an amount that is not whole cents shows every digit ("$5.005")."""
    sign = "-" if amount_nanos < 0 else ""
    whole, frac = divmod(abs(amount_nanos), NANOS_PER_USD)
    digits = f"{frac:09d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole:,}.{digits}"


def audit_text(value: SettingValue | str, *, is_money: bool) -> str | None:
    """How a value reads in settings_changes: amounts as plain dollars ("50.00"), booleans as
    "true"/"false", no value as NULL, the alert thresholds as dollars joined by commas ("" for none)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(audit_text(amount, is_money=True) or "" for amount in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_money and isinstance(value, int):
        return dollars(value).replace("$", "").replace(",", "")
    return str(value)


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
