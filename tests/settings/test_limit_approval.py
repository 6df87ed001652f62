"""Raising the minimum balance or the monthly cap above the deployment's approval level (or clearing the
cap) is a decision of one function, may_raise_above_approval_level: with auth off (no roles) every
caller may and the raise is reported as a wallet event; with roles, only finance and admin may
(tests/security/test_authentication.py covers it through keys)."""

from __future__ import annotations

import json

import asyncpg
import pytest
from consofta.billing.v1 import settings_service_pb2_grpc

from service.app.settings import update_settings
from service.domain.errors import ApprovalRequired
from service.domain.money import usd as usd_nanos
from service.domain.settings_approval import ApprovalLevels, may_raise_above_approval_level
from service.domain.settings_checks import RechargeBounds
from tests.conftest import Stubs
from tests.settings.test_update_settings import update, usd

BOUNDS = RechargeBounds(usd_nanos(5), usd_nanos(10_000))
LEVELS = ApprovalLevels(minimum_balance_nanos=usd_nanos(1_000), monthly_cap_nanos=usd_nanos(10_000))


async def _raised(pool: asyncpg.Pool, company: str) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "select payload from wallet_events where company_id = $1 and event_type = 'settings_limit_raised'"
        " order by sequence",
        company,
    )
    return [json.loads(r["payload"]) for r in rows]


async def test_raises_above_the_level_are_reported_and_smaller_ones_are_not(
    stubs: Stubs, settings: settings_service_pb2_grpc.SettingsServiceAsyncStub, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    actor = (("x-actor", "jane@example.com"),)
    await update(settings, company, ["minimum_balance"], "r1", actor, minimum_balance=usd(900))
    await update(settings, company, ["monthly_recharge_cap"], "r2", actor, monthly_recharge_cap=usd(9_000))
    assert await _raised(pool, company) == []
    await update(settings, company, ["minimum_balance"], "r3", actor, minimum_balance=usd(50_000))
    await update(settings, company, ["monthly_recharge_cap"], "r4", actor)  # cleared: no cap at all
    assert await _raised(pool, company) == [
        {
            "field": "minimum_balance",
            "old_nanos": usd_nanos(900),
            "new_nanos": usd_nanos(50_000),
            "approval_level_nanos": usd_nanos(1_000),
            "actor": "jane@example.com",
        },
        {
            "field": "monthly_recharge_cap",
            "old_nanos": usd_nanos(9_000),
            "new_nanos": None,
            "approval_level_nanos": usd_nanos(10_000),
            "actor": "jane@example.com",
        },
    ]


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        (None, True),  # no roles exist yet
        (frozenset({"finance"}), True),
        (frozenset({"admin", "support"}), True),
        (frozenset({"support"}), False),
        (frozenset(), False),
    ],
)
def test_who_may_raise_a_limit_above_its_level(roles: frozenset[str] | None, allowed: bool) -> None:
    assert may_raise_above_approval_level(roles) is allowed


async def test_a_caller_without_the_role_is_refused_and_nothing_changes(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    with pytest.raises(ApprovalRequired):
        await update_settings(
            pool,
            company,
            {"minimum_balance": usd_nanos(5_000)},
            "r1",
            "bob",
            BOUNDS,
            approval=LEVELS,
            roles=frozenset({"support"}),
        )
    assert (
        await pool.fetchval("select minimum_balance_nanos from wallets where company_id = $1", company) == 0
    )
    assert await _raised(pool, company) == []
    # Below the level the same caller may, and with the role above it too.
    await update_settings(
        pool,
        company,
        {"minimum_balance": usd_nanos(500)},
        "r2",
        "bob",
        BOUNDS,
        approval=LEVELS,
        roles=frozenset(),
    )
    applied = await update_settings(
        pool,
        company,
        {"minimum_balance": usd_nanos(5_000)},
        "r3",
        "fin",
        BOUNDS,
        approval=LEVELS,
        roles=frozenset({"finance"}),
    )
    assert applied.result.minimum_balance_nanos == usd_nanos(5_000)
    assert len(await _raised(pool, company)) == 1
