"""The settings rules as plain functions (no database): bounds are inclusive, only changed fields are
checked on their own, and the cap rule holds for the resulting settings."""

from __future__ import annotations

from service.domain.money import usd
from service.domain.settings import MONTHLY_RECHARGE_CAP, RECHARGE_AMOUNT, SettingsValues, audit_text, dollars
from service.domain.settings_checks import RechargeBounds, check_settings

BOUNDS = RechargeBounds(usd(5), usd(10_000))
STORED = SettingsValues(
    minimum_balance_nanos=0,
    recharge_amount_nanos=usd(50),
    auto_recharge_enabled=False,
    preload_amount_nanos=usd(50),
    monthly_recharge_cap_nanos=None,
)


def fields(changes: dict[str, int | bool | None], stored: SettingsValues = STORED) -> list[str]:
    return [v.field for v in check_settings(stored.with_changes(changes), frozenset(changes), BOUNDS)]


def test_bounds_are_inclusive() -> None:
    assert fields({RECHARGE_AMOUNT: usd(5)}) == []
    assert fields({RECHARGE_AMOUNT: usd(10_000)}) == []
    assert fields({"minimum_balance": usd(100_000)}) == []
    assert fields({"minimum_balance": 0}) == []
    assert fields({"preload_amount": 0}) == []


def test_a_stored_value_outside_new_bounds_does_not_block_other_changes() -> None:
    old = SettingsValues(0, usd(2), False, usd(50), None)  # $2 was allowed by an older deployment
    assert fields({"minimum_balance": usd(10)}, old) == []
    assert fields({RECHARGE_AMOUNT: usd(2)}, old) == ["settings.recharge_amount"]


def test_cap_rule_is_reported_on_the_field_that_changed() -> None:
    capped = SettingsValues(0, usd(50), False, usd(50), usd(100))
    assert fields({RECHARGE_AMOUNT: usd(101)}, capped) == ["settings.recharge_amount"]
    assert fields({MONTHLY_RECHARGE_CAP: usd(49)}) == ["settings.monthly_recharge_cap"]
    assert fields({MONTHLY_RECHARGE_CAP: usd(49), RECHARGE_AMOUNT: usd(40)}) == []
    assert fields({MONTHLY_RECHARGE_CAP: None, RECHARGE_AMOUNT: usd(500)}, capped) == []


def test_money_reads_exactly() -> None:
    assert dollars(usd(1_234, 500_000_000)) == "$1,234.50"
    assert dollars(usd(5, 5_000_000)) == "$5.005"
    assert dollars(-usd(0, 10_000_000)) == "-$0.01"
    assert audit_text(usd(10_000), is_money=True) == "10000.00"
    assert audit_text(True, is_money=False) == "true"
    assert audit_text(None, is_money=True) is None
