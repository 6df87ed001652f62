"""Creating and reading wallets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from service.domain.errors import (
    CompanyExists,
    CompanyNotFound,
    FieldViolation,
    IdempotencyKeyReused,
    InvalidArgument,
)

# held_nanos() sums the active holds not yet expired at now(): expiry needs no sweeper.
_WALLET_SQL = """
    select c.company_id, c.display_name, c.create_request_id, w.balance_nanos, w.minimum_balance_nanos,
           w.last_sequence, w.created_at, w.updated_at, w.credit_limit_nanos, w.suspended,
           w.last_recharge_at, held_nanos(c.company_id) as held_nanos
      from companies c join wallets w using (company_id)
     where c.company_id = $1
"""


class WalletStatus(StrEnum):
    ACTIVE = "active"
    BELOW_MINIMUM = "below_minimum"
    SUSPENDED = "suspended"


def wallet_status(row: asyncpg.Record) -> WalletStatus:
    if row["suspended"]:
        return WalletStatus.SUSPENDED
    if row["balance_nanos"] < row["minimum_balance_nanos"]:
        return WalletStatus.BELOW_MINIMUM
    return WalletStatus.ACTIVE


# Up to $1,000,000, as the wallets.credit_limit_nanos check allows.
MAX_CREDIT_LIMIT_NANOS = 1_000_000 * 1_000_000_000


@dataclass(frozen=True)
class CreatedWallet:
    wallet: asyncpg.Record
    replayed: bool


async def create_wallet(
    pool: asyncpg.Pool, company_id: str, display_name: str, request_id: str
) -> CreatedWallet:
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            """
            insert into companies (company_id, display_name, create_request_id) values ($1, $2, $3)
            on conflict do nothing
            returning company_id
            """,
            company_id,
            display_name,
            request_id,
        )
        if inserted is not None:
            await conn.execute("insert into wallets (company_id) values ($1)", company_id)
            await conn.execute("insert into billing_settings (company_id) values ($1)", company_id)
            row = await conn.fetchrow(_WALLET_SQL, company_id)
            assert row is not None
            return CreatedWallet(row, replayed=False)
    # Nothing inserted: either this exact request ran before, or the company or the key is taken.
    existing = await pool.fetchrow(_WALLET_SQL, company_id)
    if existing is not None and existing["create_request_id"] == request_id:
        if existing["display_name"] != display_name:
            raise IdempotencyKeyReused(
                f"request id {request_id!r} already created company {company_id!r} with another display name",
                metadata={"request_id": request_id, "company_id": company_id},
            )
        return CreatedWallet(existing, replayed=True)
    if existing is not None:
        raise CompanyExists(
            f"company {company_id!r} already has a wallet", metadata={"company_id": company_id}
        )
    owner = await pool.fetchval("select company_id from companies where create_request_id = $1", request_id)
    raise IdempotencyKeyReused(
        f"request id {request_id!r} was already used to create company {owner!r}",
        metadata={"request_id": request_id, "company_id": str(owner)},
    )


async def get_wallet(pool: asyncpg.Pool, company_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(_WALLET_SQL, company_id)
    if row is None:
        raise CompanyNotFound(company_id)
    return row


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
