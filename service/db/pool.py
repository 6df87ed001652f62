"""The asyncpg pool, and creating the service's database on a fresh server."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, database: str) -> str:
    """The same server URL, pointed at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def ensure_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", database)
        if not exists:
            try:
                await conn.execute(f'create database "{database}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another replica created it between our check and our create
    finally:
        await conn.close()


async def create_pool(url: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        # Statements run under a bounded time, so a stuck lock shows up as an error, not a hang.
        server_settings={"application_name": "consofta-billing", "statement_timeout": "30s"},
    )
    assert pool is not None
    return pool
