"""Billing settings use cases: read, change under an update mask (audited), and list the audit trail.

The minimum balance lives on wallets.minimum_balance_nanos (RecordUsage reads it there, under the
wallet lock it already holds); every other setting lives in billing_settings. A change claims its
request id, then locks the wallet row first and the settings row second, the order every writer of
both uses, so two writers never wait on each other in a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from service.app import idempotency, page_tokens
from service.app.rows import Row
from service.domain.errors import ApprovalRequired, CompanyNotFound, FieldViolation, InvalidArgument
from service.domain.settings import (
    BALANCE_ALERT_THRESHOLDS,
    FIXED_AMOUNT,
    MONEY_FIELDS,
    PAUSED_NO_CARD,
    WRITABLE_FIELDS,
    SettingsValues,
    SettingValue,
    audit_text,
)
from service.domain.settings_approval import (
    ApprovalLevels,
    may_raise_above_approval_level,
    raises_above_approval,
)
from service.domain.settings_checks import RechargeBounds, check_settings

UPDATE_OPERATION = "update_settings"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
RECHARGE_WANTED_CHANNEL = "recharge_wanted"
DEFAULT_APPROVAL_LEVELS = ApprovalLevels()

SETTINGS_SQL = """
    select b.company_id, w.minimum_balance_nanos, b.recharge_amount_nanos, b.auto_recharge_enabled,
           b.preload_amount_nanos, b.monthly_recharge_cap_nanos, b.auto_recharge_paused_reason,
           b.first_card_set_at, b.updated_at, b.recharge_mode, b.target_balance_nanos,
           c.payment_method_id, c.brand, c.last4, c.exp_month, c.exp_year, c.fingerprint,
           c.updated_at as card_updated_at,
           array(select t.threshold_nanos from balance_alert_thresholds t
                  where t.company_id = b.company_id order by t.threshold_nanos)
               as balance_alert_thresholds_nanos
      from billing_settings b
      join wallets w using (company_id)
      left join payment_cards c using (company_id)
     where b.company_id = $1
"""

T = TypeVar("T")


@dataclass(frozen=True)
class Card:
    """The card on file, as the dashboard shows it: never a card number."""

    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str | None
    updated_at: datetime

    @property
    def audit_text(self) -> str:
        return (
            f"{self.brand} ending {self.last4}, expires {self.exp_month:02d}/{self.exp_year} "
            f"({self.payment_method_id})"
        )


@dataclass(frozen=True)
class BillingSettings:
    company_id: str
    minimum_balance_nanos: int
    recharge_amount_nanos: int
    auto_recharge_enabled: bool
    preload_amount_nanos: int
    monthly_recharge_cap_nanos: int | None
    auto_recharge_paused_reason: str | None
    first_card_set_at: datetime | None
    updated_at: datetime
    card: Card | None
    # Ascending.
    balance_alert_thresholds_nanos: tuple[int, ...] = ()
    recharge_mode: str = FIXED_AMOUNT
    target_balance_nanos: int | None = None

    @property
    def values(self) -> SettingsValues:
        return SettingsValues(
            minimum_balance_nanos=self.minimum_balance_nanos,
            recharge_amount_nanos=self.recharge_amount_nanos,
            auto_recharge_enabled=self.auto_recharge_enabled,
            preload_amount_nanos=self.preload_amount_nanos,
            monthly_recharge_cap_nanos=self.monthly_recharge_cap_nanos,
            balance_alert_thresholds_nanos=self.balance_alert_thresholds_nanos,
            recharge_mode=self.recharge_mode,
            target_balance_nanos=self.target_balance_nanos,
        )


@dataclass(frozen=True)
class Applied(Generic[T]):
    """A mutation's result, and whether it is the stored result of an earlier identical request."""

    result: T
    replayed: bool


def card_of(row: Row) -> Card | None:
    if row["payment_method_id"] is None:
        return None
    return Card(
        payment_method_id=row["payment_method_id"],
        brand=row["brand"],
        last4=row["last4"],
        exp_month=row["exp_month"],
        exp_year=row["exp_year"],
        fingerprint=row["fingerprint"],
        updated_at=row["card_updated_at"],
    )


def settings_of(row: Row) -> BillingSettings:
    return BillingSettings(
        company_id=row["company_id"],
        minimum_balance_nanos=row["minimum_balance_nanos"],
        recharge_amount_nanos=row["recharge_amount_nanos"],
        auto_recharge_enabled=row["auto_recharge_enabled"],
        preload_amount_nanos=row["preload_amount_nanos"],
        monthly_recharge_cap_nanos=row["monthly_recharge_cap_nanos"],
        auto_recharge_paused_reason=row["auto_recharge_paused_reason"],
        first_card_set_at=row["first_card_set_at"],
        updated_at=row["updated_at"],
        card=card_of(row),
        balance_alert_thresholds_nanos=tuple(row["balance_alert_thresholds_nanos"]),
        recharge_mode=row["recharge_mode"],
        target_balance_nanos=row["target_balance_nanos"],
    )


def audit_view(settings: BillingSettings) -> dict[str, str | None]:
    """Every audited value of the settings, as the audit trail writes it."""
    view = {
        name: audit_text(settings.values.value_of(name), is_money=name in MONEY_FIELDS)
        for name in WRITABLE_FIELDS
    }
    view["auto_recharge_paused_reason"] = settings.auto_recharge_paused_reason
    view["card"] = None if settings.card is None else settings.card.audit_text
    return view


async def lock_settings(conn: Any, company_id: str) -> BillingSettings:
    """Lock the company's wallet and settings rows (in that order) and return the settings."""
    locked = await conn.fetchval("select true from wallets where company_id = $1 for update", company_id)
    if locked is None:
        raise CompanyNotFound(company_id)
    await conn.execute("select 1 from billing_settings where company_id = $1 for update", company_id)
    return await get_settings(conn, company_id)


async def get_settings(conn: Any, company_id: str) -> BillingSettings:
    row = await conn.fetchrow(SETTINGS_SQL, company_id)
    if row is None:
        raise CompanyNotFound(company_id)
    return settings_of(row)


async def record_changes(
    conn: Any,
    company_id: str,
    actor: str,
    request_id: str,
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
    principal_id: str | None = None,
) -> int:
    """One settings_changes row per value that differs; returns how many were written. `actor` is who
    the change is on behalf of, `principal_id` the authenticated caller that made it."""
    changed = [name for name in after if before.get(name) != after[name]]
    if changed:
        await conn.executemany(
            """
            insert into settings_changes (company_id, actor, request_id, field, old_value, new_value,
                                          principal_id)
            values ($1, $2, $3, $4, $5, $6, $7)
            """,
            [
                (company_id, actor, request_id, name, before.get(name), after[name], principal_id)
                for name in changed
            ],
        )
    return len(changed)


async def replay_of(conn: Any, seen: idempotency.Seen, kind: type[T], current: Any) -> T:
    """The stored result of a replay; a key kept without one (an older release) answers with now."""
    if seen.result is not None:
        return idempotency.result_of(kind, seen.result)
    result: T = await current(conn)
    return result


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


# ---- the audit trail, paginated (AIP-158) -------------------------------------------------------


@dataclass(frozen=True)
class SettingsChange:
    change_id: int
    field: str
    old_value: str | None
    new_value: str | None
    actor: str
    request_id: str | None
    changed_at: datetime
    # None for changes recorded before principals were.
    principal_id: str | None = None


def page_token(company_id: str, last_change_id: int) -> str:
    return page_tokens.encode(page_tokens.digest("settings_changes", company_id), last_change_id)


def parse_page_token(token: str, company_id: str) -> int:
    """The change id the page continues after, or InvalidArgument naming page_token."""
    (last,) = page_tokens.decode(token, page_tokens.digest("settings_changes", company_id), positions=1)
    return page_tokens.positive_int(last)


@dataclass(frozen=True)
class ChangesPage:
    changes: list[SettingsChange]
    next_page_token: str


async def list_changes(
    pool: asyncpg.Pool, company_id: str, page_size: int, after_change_id: int | None
) -> ChangesPage:
    exists = await pool.fetchval("select true from billing_settings where company_id = $1", company_id)
    if exists is None:
        raise CompanyNotFound(company_id)
    found = await pool.fetch(
        """
        select change_id, field, old_value, new_value, actor, request_id, changed_at, principal_id
          from settings_changes
         where company_id = $1 and ($2::bigint is null or change_id < $2)
         order by change_id desc
         limit $3
        """,
        company_id,
        after_change_id,
        page_size + 1,
    )
    page = [SettingsChange(**dict(row)) for row in found[:page_size]]
    more = len(found) > page_size
    return ChangesPage(page, page_token(company_id, page[-1].change_id) if more else "")
