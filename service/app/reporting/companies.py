"""The existence check every report starts with, so an unknown company is NOT_FOUND, not an empty report."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.domain.errors import CompanyNotFound

# What a read can run on: a pool, or a connection acquired from one (or opened directly).
Queryable = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


async def require_wallet(conn: Queryable, company_id: str) -> int:
    """The wallet's last ledger sequence; CompanyNotFound when there is no wallet."""
    last_sequence = await conn.fetchval("select last_sequence from wallets where company_id = $1", company_id)
    if last_sequence is None:
        raise CompanyNotFound(company_id)
    return int(last_sequence)
