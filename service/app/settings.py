"""Billing settings use cases: read, change under an update mask (audited), and list the audit trail.

The minimum balance lives on wallets.minimum_balance_nanos (RecordUsage reads it there, under the
wallet lock it already holds); every other setting lives in billing_settings. A change locks the
wallet row first and the settings row second, the order every writer of both uses, so two writers
never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import asyncpg

from service.app import page_tokens
from service.app.hashing import request_hash
from service.app.settings_requests import Conn, find_request, save_request
from service.domain.errors import CompanyNotFound, FieldViolation, InvalidArgument
from service.domain.settings import (
    MONEY_FIELDS,
    PAUSED_NO_CARD,
    WRITABLE_FIELDS,
    RechargeBounds,
    SettingsValues,
    audit_text,
    check_settings,
)

UPDATE_OPERATION = "update_settings"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

SETTINGS_SQL = """
    select b.company_id, w.minimum_balance_nanos, b.recharge_amount_nanos, b.auto_recharge_enabled,
           b.preload_amount_nanos, b.monthly_recharge_cap_nanos, b.auto_recharge_paused_reason,
           b.first_card_set_at, b.updated_at,
           c.payment_method_id, c.brand, c.last4, c.exp_month, c.exp_year, c.fingerprint,
           c.updated_at as card_updated_at
      from billing_settings b
      join wallets w using (company_id)
      left join payment_cards c using (company_id)
     where b.company_id = $1
"""

# Encodes the response to store for a replay; called inside the transaction with the settings row.
Encoder = Callable[[asyncpg.Record], bytes]


@dataclass(frozen=True)
class Stored:
    """A mutation's response: the serialized gRPC response, and whether it is a replay."""

    response: bytes
    replayed: bool


def values_of(row: asyncpg.Record) -> SettingsValues:
    return SettingsValues(
        minimum_balance_nanos=row["minimum_balance_nanos"],
        recharge_amount_nanos=row["recharge_amount_nanos"],
        auto_recharge_enabled=row["auto_recharge_enabled"],
        preload_amount_nanos=row["preload_amount_nanos"],
        monthly_recharge_cap_nanos=row["monthly_recharge_cap_nanos"],
    )


def audit_view(row: asyncpg.Record) -> dict[str, str | None]:
    """Every audited value of a settings row, as the audit trail writes it."""
    view = {
        name: audit_text(values_of(row).value_of(name), is_money=name in MONEY_FIELDS)
        for name in WRITABLE_FIELDS
    }
    view["auto_recharge_paused_reason"] = row["auto_recharge_paused_reason"]
    view["card"] = card_text(row)
    return view


def card_text(row: asyncpg.Record) -> str | None:
    if row["payment_method_id"] is None:
        return None
    return (
        f"{row['brand']} ending {row['last4']}, expires {row['exp_month']:02d}/{row['exp_year']} "
        f"({row['payment_method_id']})"
    )


async def lock_settings(conn: Conn, company_id: str) -> asyncpg.Record:
    """Lock the company's wallet and settings rows (in that order) and return the settings."""
    locked = await conn.fetchval("select true from wallets where company_id = $1 for update", company_id)
    if locked is None:
        raise CompanyNotFound(company_id)
    await conn.execute("select 1 from billing_settings where company_id = $1 for update", company_id)
    return await read_settings(conn, company_id)


async def read_settings(conn: Conn, company_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(SETTINGS_SQL, company_id)
    if row is None:
        raise CompanyNotFound(company_id)
    return row


async def record_changes(
    conn: Conn,
    company_id: str,
    actor: str,
    request_id: str,
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
) -> int:
    """One settings_changes row per value that differs; returns how many were written."""
    changed = [name for name in after if before.get(name) != after[name]]
    if changed:
        await conn.executemany(
            """
            insert into settings_changes (company_id, actor, request_id, field, old_value, new_value)
            values ($1, $2, $3, $4, $5, $6)
            """,
            [(company_id, actor, request_id, name, before.get(name), after[name]) for name in changed],
        )
    return len(changed)


async def get_settings(pool: asyncpg.Pool, company_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(SETTINGS_SQL, company_id)
    if row is None:
        raise CompanyNotFound(company_id)
    return row


async def update_settings(
    pool: asyncpg.Pool,
    company_id: str,
    changes: Mapping[str, int | bool | None],
    request_id: str,
    actor: str,
    bounds: RechargeBounds,
    encode: Encoder,
) -> Stored:
    """Apply `changes` (field name -> new value; only these change), validated against the settings
    they produce, audited, in one transaction."""
    fingerprint = request_hash(
        UPDATE_OPERATION, company_id, *(f"{name}={changes[name]!r}" for name in sorted(changes))
    )
    async with pool.acquire() as conn, conn.transaction():
        row = await lock_settings(conn, company_id)
        seen = await find_request(conn, company_id, request_id, UPDATE_OPERATION, fingerprint)
        if seen is not None and seen.response is not None:
            return Stored(seen.response, replayed=True)
        new = values_of(row).with_changes(dict(changes))
        violations: list[FieldViolation] = check_settings(new, frozenset(changes), bounds)
        if violations:
            raise InvalidArgument(violations)

        paused_reason = row["auto_recharge_paused_reason"]
        has_card = row["payment_method_id"] is not None
        # Auto-recharge switched on before any card exists waits for one, and says so.
        if new.auto_recharge_enabled and not has_card and paused_reason is None:
            paused_reason = PAUSED_NO_CARD
        elif not new.auto_recharge_enabled and paused_reason == PAUSED_NO_CARD:
            paused_reason = None

        if new.minimum_balance_nanos != row["minimum_balance_nanos"]:
            await conn.execute(
                "update wallets set minimum_balance_nanos = $2, updated_at = now() where company_id = $1",
                company_id,
                new.minimum_balance_nanos,
            )
        await conn.execute(
            """
            update billing_settings
               set recharge_amount_nanos = $2, auto_recharge_enabled = $3, preload_amount_nanos = $4,
                   monthly_recharge_cap_nanos = $5, auto_recharge_paused_reason = $6, updated_at = now()
             where company_id = $1
            """,
            company_id,
            new.recharge_amount_nanos,
            new.auto_recharge_enabled,
            new.preload_amount_nanos,
            new.monthly_recharge_cap_nanos,
            paused_reason,
        )
        after = await read_settings(conn, company_id)
        await record_changes(conn, company_id, actor, request_id, audit_view(row), audit_view(after))
        if values_of(after) != values_of(row):
            # A higher minimum, auto-recharge switched on, another amount or cap may call for a charge
            # now: wake the recharge loop at commit instead of leaving it to the next sweep.
            await conn.execute("select pg_notify('recharge_wanted', $1)", company_id)
        response = encode(after)
        await save_request(conn, company_id, request_id, UPDATE_OPERATION, fingerprint, response)
        return Stored(response, replayed=False)


# ---- the audit trail, paginated (AIP-158) -------------------------------------------------------


def page_token(company_id: str, last_change_id: int) -> str:
    return page_tokens.encode(page_tokens.digest("settings_changes", company_id), last_change_id)


def parse_page_token(token: str, company_id: str) -> int:
    """The change id the page continues after, or InvalidArgument naming page_token."""
    (last,) = page_tokens.decode(token, page_tokens.digest("settings_changes", company_id), positions=1)
    return page_tokens.positive_int(last)


@dataclass(frozen=True)
class ChangesPage:
    changes: list[asyncpg.Record]
    next_page_token: str


async def list_changes(
    pool: asyncpg.Pool, company_id: str, page_size: int, after_change_id: int | None
) -> ChangesPage:
    exists = await pool.fetchval("select true from billing_settings where company_id = $1", company_id)
    if exists is None:
        raise CompanyNotFound(company_id)
    rows = await pool.fetch(
        """
        select change_id, field, old_value, new_value, actor, request_id, changed_at
          from settings_changes
         where company_id = $1 and ($2::bigint is null or change_id < $2)
         order by change_id desc
         limit $3
        """,
        company_id,
        after_change_id,
        page_size + 1,
    )
    page = list(rows[:page_size])
    more = len(rows) > page_size
    return ChangesPage(page, page_token(company_id, page[-1]["change_id"]) if more else "")
