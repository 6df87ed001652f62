"""Read side of the admin commands: a wallet and its last ledger entries, straight from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.domain.errors import CompanyNotFound


@dataclass(frozen=True)
class LedgerLine:
    sequence: int
    created_at: datetime
    entry_type: str
    amount_nanos: int
    balance_after_nanos: int
    reference: str | None
    description: str


@dataclass(frozen=True)
class WalletView:
    company_id: str
    display_name: str
    balance_nanos: int
    minimum_balance_nanos: int
    last_sequence: int
    entries: list[LedgerLine]  # newest first

    @property
    def below_minimum(self) -> bool:
        return self.balance_nanos < self.minimum_balance_nanos


async def wallet_view(conn: asyncpg.Connection, company_id: str, last_n: int) -> WalletView:
    # One snapshot, so the balance and the entries agree even while usage is being recorded.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        wallet = await conn.fetchrow(
            """
            select c.company_id, c.display_name, w.balance_nanos, w.minimum_balance_nanos, w.last_sequence
              from companies c join wallets w using (company_id)
             where c.company_id = $1
            """,
            company_id,
        )
        if wallet is None:
            raise CompanyNotFound(company_id)
        rows = await conn.fetch(
            """
            select sequence, created_at, entry_type, amount_nanos, balance_after_nanos, reference, description
              from ledger_entries
             where company_id = $1
             order by sequence desc
             limit $2
            """,
            company_id,
            last_n,
        )
    return WalletView(
        company_id=wallet["company_id"],
        display_name=wallet["display_name"],
        balance_nanos=wallet["balance_nanos"],
        minimum_balance_nanos=wallet["minimum_balance_nanos"],
        last_sequence=wallet["last_sequence"],
        entries=[LedgerLine(**dict(row)) for row in rows],
    )


@dataclass(frozen=True)
class RechargeLine:
    attempt_id: str
    kind: str
    status: str
    amount_nanos: int
    card: str
    payment_intent_id: str | None
    decline: str | None
    retry_number: int
    call_count: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None


async def recharge_attempts(conn: asyncpg.Connection, company_id: str, last_n: int) -> list[RechargeLine]:
    """A company's recharge attempts, newest first (support's "why was my card charged / not charged")."""
    if await conn.fetchval("select 1 from wallets where company_id = $1", company_id) is None:
        raise CompanyNotFound(company_id)
    rows = await conn.fetch(
        """
        select attempt_id, kind, status, amount_nanos, card_brand || ' ' || card_last4 as card,
               payment_intent_id, nullif(concat_ws(': ', decline_code, decline_message), '') as decline,
               retry_number, call_count, created_at, next_attempt_at, last_error
          from recharge_attempts
         where company_id = $1
         order by created_at desc, attempt_id
         limit $2
        """,
        company_id,
        last_n,
    )
    return [RechargeLine(**{**dict(row), "attempt_id": str(row["attempt_id"])}) for row in rows]
