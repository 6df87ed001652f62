"""The asyncpg pool, and creating the service's database on a fresh server."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from asyncpg.pool import PoolAcquireContext

log = structlog.get_logger(__name__)


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


class AcquireTimeout(Exception):
    """No connection came free within the pool's acquire timeout (the edge answers UNAVAILABLE)."""


class _CountedAcquire:
    """`pool.acquire()` as asyncpg returns it, counting the callers still waiting for a connection."""

    def __init__(self, pool: CountingPool, inner: PoolAcquireContext) -> None:
        self._pool = pool
        self._inner = inner

    async def _counted(self) -> Any:
        self._pool.waiting += 1
        try:
            return await self._inner.__aenter__()
        except TimeoutError:
            raise AcquireTimeout(
                f"no database connection came free within {self._pool.acquire_timeout_s:g} s"
            ) from None
        finally:
            self._pool.waiting -= 1

    async def __aenter__(self) -> Any:
        return await self._counted()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._inner.__aexit__(kind, error, tb)
        except Exception as release_error:
            if kind is not None:
                raise
            # The caller's work is done (a transaction inside the block has committed), but resetting the
            # connection for the next caller failed: the server killed it meanwhile (pg_terminate_backend,
            # a restart). asyncpg has already terminated it and given its slot back to the pool. Raising
            # here would turn a committed debit into an error the caller cannot tell from a failure.
            log.warning("pooled connection lost after its work was done", error=repr(release_error))

    def __await__(self) -> Generator[Any, None, Any]:
        return self._counted().__await__()


class CountingPool(asyncpg.Pool):
    """An asyncpg pool that knows how many callers wait for a connection (asyncpg does not say)."""

    waiting = 0
    # A caller waits at most this long for a connection; None waits forever.
    acquire_timeout_s: float | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        # Every pool method (fetch, execute...) goes through acquire(), so all waiters are counted and
        # bounded.
        bound = self.acquire_timeout_s if timeout is None else timeout
        return _CountedAcquire(self, super().acquire(timeout=bound))


async def create_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    acquire_timeout_s: float | None = None,
    statement_timeout_s: float = 30.0,
) -> CountingPool:
    # asyncpg.create_pool() is `Pool(dsn, **defaults)` awaited; the same, with our subclass.
    pool = CountingPool(
        url,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        # Statements run under a bounded time, so a stuck lock shows up as an error, not a hang.
        server_settings={
            "application_name": "consofta-billing",
            "statement_timeout": f"{max(1, round(statement_timeout_s * 1000))}ms",
        },
    )
    pool.acquire_timeout_s = acquire_timeout_s
    await pool
    return pool
