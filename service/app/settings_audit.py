"""The settings' audit trail: one row per changed value, written in the change's transaction, and
read back newest first, paginated (AIP-158)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from service.app import page_tokens
from service.app.billing_settings import BillingSettings
from service.domain.errors import CompanyNotFound
from service.domain.settings import MONEY_FIELDS, WRITABLE_FIELDS, audit_text

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def audit_view(settings: BillingSettings) -> dict[str, str | None]:
    """Every audited value of the settings, as the audit trail writes it."""
    view = {
        name: audit_text(settings.values.value_of(name), is_money=name in MONEY_FIELDS)
        for name in WRITABLE_FIELDS
    }
    view["auto_recharge_paused_reason"] = settings.auto_recharge_paused_reason
    view["card"] = None if settings.card is None else settings.card.audit_text
    view["backup_card"] = None if settings.backup_card is None else settings.backup_card.audit_text
    return view


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
