"""The billing settings as stored: read, locked for a change, and the card on file as the dashboard
shows it; and the result of a mutation with whether it was replayed.

The minimum balance lives on wallets.minimum_balance_nanos (RecordUsage reads it there, under the
wallet lock it already holds); every other setting lives in billing_settings. A change locks the
wallet row first and the settings row second, the order every writer of both uses, so two writers
never wait on each other in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from service.app import idempotency
from service.app.rows import Row
from service.domain.errors import CompanyNotFound
from service.domain.settings import BACKUP_CARD, FIXED_AMOUNT, PRIMARY_CARD, SettingsValues

# NOTIFY'd at commit by a change that may call for a charge now, so the recharge loop wakes at once.
RECHARGE_WANTED_CHANNEL = "recharge_wanted"

SETTINGS_SQL = """
    select b.company_id, w.minimum_balance_nanos, b.recharge_amount_nanos, b.auto_recharge_enabled,
           b.preload_amount_nanos, b.monthly_recharge_cap_nanos, b.auto_recharge_paused_reason,
           b.first_card_set_at, b.updated_at, b.recharge_mode, b.target_balance_nanos,
           c.payment_method_id, c.brand, c.last4, c.exp_month, c.exp_year, c.fingerprint,
           c.updated_at as card_updated_at,
           k.payment_method_id as backup_payment_method_id, k.brand as backup_brand,
           k.last4 as backup_last4, k.exp_month as backup_exp_month, k.exp_year as backup_exp_year,
           k.fingerprint as backup_fingerprint, k.updated_at as backup_card_updated_at,
           array(select t.threshold_nanos from balance_alert_thresholds t
                  where t.company_id = b.company_id order by t.threshold_nanos)
               as balance_alert_thresholds_nanos
      from billing_settings b
      join wallets w using (company_id)
      left join payment_cards c on c.company_id = b.company_id and c.role = 'primary'
      left join payment_cards k on k.company_id = b.company_id and k.role = 'backup'
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
    # PRIMARY_CARD or BACKUP_CARD.
    role: str = PRIMARY_CARD

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
    backup_card: Card | None = None

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


def card_of(row: Row, role: str = PRIMARY_CARD) -> Card | None:
    """The card of `role` in a row that names the backup's columns with a ``backup_`` prefix."""
    prefix = "backup_" if role == BACKUP_CARD else ""
    if row[prefix + "payment_method_id"] is None:
        return None
    return Card(
        payment_method_id=row[prefix + "payment_method_id"],
        brand=row[prefix + "brand"],
        last4=row[prefix + "last4"],
        exp_month=row[prefix + "exp_month"],
        exp_year=row[prefix + "exp_year"],
        fingerprint=row[prefix + "fingerprint"],
        updated_at=row[prefix + "card_updated_at"],
        role=role,
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
        backup_card=card_of(row, BACKUP_CARD),
    )


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


async def replay_of(conn: Any, seen: idempotency.Seen, kind: type[T], current: Any) -> T:
    """The stored result of a replay; a key kept without one (an older release) answers with now."""
    if seen.result is not None:
        return idempotency.result_of(kind, seen.result)
    result: T = await current(conn)
    return result
