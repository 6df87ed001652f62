"""Approval levels: raising the minimum balance or the monthly cap above its level (or clearing the
cap) needs the finance or admin role. Pure: which raises a change makes, and who may make them."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.money import usd
from service.domain.principals import Role
from service.domain.settings import MINIMUM_BALANCE, MONTHLY_RECHARGE_CAP, SettingsValues


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
