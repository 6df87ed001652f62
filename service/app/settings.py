"""Changing the billing settings under an update mask: validated on the settings it produces,
approval levels applied, audited, in one transaction.

A change claims its request id, then locks the wallet row first and the settings row second
(``billing_settings.lock_settings``), the order every writer of both uses. Reading the settings is
``billing_settings.py``; the audit trail ``settings_audit.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg

from service.app import idempotency
from service.app.billing_settings import (
    RECHARGE_WANTED_CHANNEL,
    Applied,
    BillingSettings,
    get_settings,
    lock_settings,
    replay_of,
)
from service.app.settings_audit import audit_view, record_changes
from service.domain.errors import ApprovalRequired, FieldViolation, InvalidArgument
from service.domain.settings import BALANCE_ALERT_THRESHOLDS, PAUSED_NO_CARD, SettingValue
from service.domain.settings_approval import (
    ApprovalLevels,
    may_raise_above_approval_level,
    raises_above_approval,
)
from service.domain.settings_checks import RechargeBounds, check_settings

UPDATE_OPERATION = "update_settings"
DEFAULT_APPROVAL_LEVELS = ApprovalLevels()


async def update_settings(
    pool: asyncpg.Pool,
    company_id: str,
    changes: Mapping[str, SettingValue],
    request_id: str,
    actor: str,
    bounds: RechargeBounds,
    principal_id: str | None = None,
    *,
    approval: ApprovalLevels = DEFAULT_APPROVAL_LEVELS,
    roles: frozenset[str] | None = None,
) -> Applied[BillingSettings]:
    """Apply `changes` (field name -> new value; only these change), validated against the settings
    they produce, audited, in one transaction.

    Raising the minimum balance or the monthly cap above its approval level (or clearing the cap) is
    allowed only when `may_raise_above_approval_level(roles)` says so, and emits settings_limit_raised.
    """
    request = idempotency.Request(
        UPDATE_OPERATION,
        company_id,
        request_id,
        idempotency.fingerprint(
            UPDATE_OPERATION,
            company_id,
            *(p for name in sorted(changes) for p in (name, _part(changes[name]))),
        ),
    )
    async with pool.acquire() as conn, conn.transaction():
        seen = await idempotency.claim(conn, request)
        if seen is not None:
            replay = await replay_of(conn, seen, BillingSettings, lambda c: get_settings(c, company_id))
            return Applied(replay, replayed=True)
        before = await lock_settings(conn, company_id)
        new = before.values.with_changes(dict(changes))
        violations: list[FieldViolation] = check_settings(new, frozenset(changes), bounds)
        if violations:
            raise InvalidArgument(violations)
        raises = raises_above_approval(before.values, new, approval)
        if raises and not may_raise_above_approval_level(roles):
            fields = ", ".join(r.field for r in raises)
            raise ApprovalRequired(
                f"raising {fields} above the approval level needs the finance or admin role",
                metadata={"fields": fields},
            )
        for raised in raises:
            await conn.execute(
                "select emit_wallet_event(p_company_id => $1, p_event_type => 'settings_limit_raised',"
                " p_payload => $2::jsonb)",
                company_id,
                json.dumps(
                    {
                        "field": raised.field,
                        "old_nanos": raised.old_nanos,
                        "new_nanos": raised.new_nanos,
                        "approval_level_nanos": raised.approval_level_nanos,
                        "actor": actor,
                    }
                ),
            )

        paused_reason = before.auto_recharge_paused_reason
        # Auto-recharge switched on before any card exists waits for one, and says so.
        if new.auto_recharge_enabled and before.card is None and paused_reason is None:
            paused_reason = PAUSED_NO_CARD
        elif not new.auto_recharge_enabled and paused_reason == PAUSED_NO_CARD:
            paused_reason = None

        if new.minimum_balance_nanos != before.minimum_balance_nanos:
            await conn.execute(
                "update wallets set minimum_balance_nanos = $2, updated_at = now() where company_id = $1",
                company_id,
                new.minimum_balance_nanos,
            )
        await conn.execute(
            """
            update billing_settings
               set recharge_amount_nanos = $2, auto_recharge_enabled = $3, preload_amount_nanos = $4,
                   monthly_recharge_cap_nanos = $5, auto_recharge_paused_reason = $6, recharge_mode = $7,
                   target_balance_nanos = $8, updated_at = now()
             where company_id = $1
            """,
            company_id,
            new.recharge_amount_nanos,
            new.auto_recharge_enabled,
            new.preload_amount_nanos,
            new.monthly_recharge_cap_nanos,
            paused_reason,
            new.recharge_mode,
            new.target_balance_nanos,
        )
        if BALANCE_ALERT_THRESHOLDS in changes:
            await _replace_thresholds(conn, company_id, new.balance_alert_thresholds_nanos)
        after = await get_settings(conn, company_id)
        await record_changes(
            conn, company_id, actor, request_id, audit_view(before), audit_view(after), principal_id
        )
        if after.values != before.values:
            # A higher minimum, auto-recharge switched on, another amount or cap may call for a charge
            # now: wake the recharge loop at commit instead of leaving it to the next sweep.
            await conn.execute("select pg_notify($1, $2)", RECHARGE_WANTED_CHANNEL, company_id)
        await idempotency.save_result(conn, request, after)
        return Applied(after, replayed=False)


def _part(value: SettingValue) -> int | bool | str | None:
    """A change as a fingerprint part: the thresholds as their sorted amounts, joined."""
    if isinstance(value, tuple):
        return ",".join(str(amount) for amount in sorted(value))
    return value


async def _replace_thresholds(conn: Any, company_id: str, thresholds_nanos: tuple[int, ...]) -> None:
    """Under the wallet lock: each threshold starts below when the balance is below it now, so it alerts
    on a debit only once the balance has been at or above it (see note_balance_alerts.sql)."""
    await conn.execute(
        "delete from balance_alert_thresholds where company_id = $1 and threshold_nanos <> all($2::bigint[])",
        company_id,
        list(thresholds_nanos),
    )
    await conn.execute(
        """
        insert into balance_alert_thresholds (company_id, threshold_nanos, below)
        select $1, t, w.balance_nanos < t from unnest($2::bigint[]) t, wallets w where w.company_id = $1
        on conflict (company_id, threshold_nanos) do nothing
        """,
        company_id,
        list(thresholds_nanos),
    )
