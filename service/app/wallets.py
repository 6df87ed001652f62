"""Creating and reading wallets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from service.app import idempotency
from service.app.rows import Row
from service.domain.errors import CompanyExists, CompanyNotFound, FieldViolation, InvalidArgument
from service.domain.money import usd

CREATE_WALLET = "create_wallet"
# Up to $1,000,000, as the wallets.credit_limit_nanos check allows.
MAX_CREDIT_LIMIT_NANOS = usd(1_000_000)

# held_nanos() sums the active holds not yet expired at now(): expiry needs no sweeper.
_WALLET_SQL = """
    select c.company_id, c.display_name, w.balance_nanos, w.minimum_balance_nanos,
           w.last_sequence, w.created_at, w.updated_at, w.credit_limit_nanos, w.suspended,
           w.last_recharge_at, held_nanos(p_company_id => c.company_id) as held_nanos
      from companies c join wallets w using (company_id)
     where c.company_id = $1
"""


class WalletStatus(StrEnum):
    ACTIVE = "active"
    BELOW_MINIMUM = "below_minimum"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Wallet:
    company_id: str
    display_name: str
    balance_nanos: int
    minimum_balance_nanos: int
    last_sequence: int
    created_at: datetime
    updated_at: datetime
    credit_limit_nanos: int
    suspended: bool
    last_recharge_at: datetime | None
    held_nanos: int

    @property
    def status(self) -> WalletStatus:
        if self.suspended:
            return WalletStatus.SUSPENDED
        if self.balance_nanos < self.minimum_balance_nanos:
            return WalletStatus.BELOW_MINIMUM
        return WalletStatus.ACTIVE


def wallet_of(row: Row) -> Wallet:
    return Wallet(**{name: row[name] for name in Wallet.__dataclass_fields__})


@dataclass(frozen=True)
class CreatedWallet:
    wallet: Wallet
    replayed: bool


def create_request(company_id: str, display_name: str, request_id: str) -> idempotency.Request:
    return idempotency.Request(
        CREATE_WALLET, company_id, request_id, idempotency.fingerprint(company_id, display_name)
    )


async def create_wallet(
    pool: asyncpg.Pool, company_id: str, display_name: str, request_id: str
) -> CreatedWallet:
    request = create_request(company_id, display_name, request_id)
    async with pool.acquire() as conn, conn.transaction():
        claim = await conn.fetchrow(
            idempotency.CLAIM_SQL, company_id, request_id, CREATE_WALLET, request.fingerprint
        )
        assert claim is not None
        if not claim["claimed"]:
            idempotency.check(request, claim["operation"], claim["request_hash"])
            return CreatedWallet(await get_wallet(conn, company_id), replayed=True)
        inserted = await conn.fetchval(
            """
            insert into companies (company_id, display_name, create_request_id) values ($1, $2, $3)
            on conflict (company_id) do nothing
            returning company_id
            """,
            company_id,
            display_name,
            request_id,
        )
        if inserted is None:
            raise CompanyExists(
                f"company {company_id!r} already has a wallet", metadata={"company_id": company_id}
            )
        await conn.execute("insert into wallets (company_id) values ($1)", company_id)
        await conn.execute("insert into billing_settings (company_id) values ($1)", company_id)
        return CreatedWallet(await get_wallet(conn, company_id), replayed=False)


async def get_wallet(conn: Any, company_id: str) -> Wallet:
    row = await conn.fetchrow(_WALLET_SQL, company_id)
    if row is None:
        raise CompanyNotFound(company_id)
    return wallet_of(row)


async def set_credit_limit(pool: asyncpg.Pool, company_id: str, credit_limit_nanos: int, actor: str) -> None:
    """Lower (or restore) a company's authorization floor to -credit_limit_nanos, audited.

    Suspension may flip with it (wallets.suspended is generated), and the trigger then emits the event.
    """
    if not 0 <= credit_limit_nanos <= MAX_CREDIT_LIMIT_NANOS:
        raise InvalidArgument(
            [FieldViolation("credit_limit", f"must be between 0 and {MAX_CREDIT_LIMIT_NANOS} nanos")]
        )
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchval(
            "select credit_limit_nanos from wallets where company_id = $1 for update", company_id
        )
        if old is None:
            raise CompanyNotFound(company_id)
        if old == credit_limit_nanos:
            return
        await conn.execute(
            "update wallets set credit_limit_nanos = $2, updated_at = now() where company_id = $1",
            company_id,
            credit_limit_nanos,
        )
        await conn.execute(
            """
            insert into settings_changes (company_id, actor, field, old_value, new_value)
            values ($1, $2, 'credit_limit_nanos', $3, $4)
            """,
            company_id,
            actor,
            str(old),
            str(credit_limit_nanos),
        )
