"""The database a process starts with: the configured one, or an embedded Postgres; then its schema."""

from __future__ import annotations

import asyncio
import functools

import asyncpg

from service.config import Config
from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.migrate import migrate
from service.db.pool import ensure_database, with_database


async def open_database(config: Config, *, own: bool = True) -> tuple[str, EmbeddedPostgres | None]:
    """The database URL to use, starting an embedded Postgres when none is configured.

    `own=False` uses an embedded Postgres that another process owns, without taking its folder's lock.
    Whatever fails after the start stops what was started (and only that).
    """
    if config.database_url:
        return config.database_url, None
    embedded = EmbeddedPostgres(config.pgdata)
    # initdb/pg_ctl block for a second or two; keep the event loop free meanwhile.
    admin_url = await asyncio.to_thread(functools.partial(embedded.start, own=own))
    try:
        await ensure_database(admin_url, DATABASE_NAME)
    except BaseException:
        await asyncio.to_thread(embedded.stop)
        raise
    return with_database(admin_url, DATABASE_NAME), embedded


async def apply_migrations(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
