"""Billing settings: the writable fields, their values (stored merged with requested) and how they
read in the audit trail. Pure code. Their rules are in ``settings_checks.py``, the approval levels
for raising a limit in ``settings_approval.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.domain.money import NANOS_PER_USD

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

# A setting's value: an amount in nanos, a flag, none (no cap), or the balance alert thresholds.
SettingValue = int | bool | str | None | tuple[int, ...]

# A card's role. The primary is charged; the backup is charged only to carry on a recharge the
# primary hard-declined or that needed authentication (service/recharge/fallback.py).
PRIMARY_CARD = "primary"
BACKUP_CARD = "backup"
CARD_ROLES = (PRIMARY_CARD, BACKUP_CARD)

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
