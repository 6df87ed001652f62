"""The benchmarks' servers: one database for a whole run, and `serve --workers N` on it, N at a time.

    async with bench_database(tmp) as url:          # BILLING_BENCH_DATABASE_URL, or an embedded Postgres
        async with served(url, workers=2, log_dir=tmp) as target:
            ...                                     # "127.0.0.1:PORT": N processes behind one port

The database outlives the servers, so every server count runs against the same Postgres.

    async with scratch_database(tmp) as url:        # a database of its own, migrated, dropped at the end
        async with served(url, workers=1, log_dir=tmp) as target:
            ...                                     # for benches that load data and must start empty
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.migrate import migrate
from service.db.pool import ensure_database, with_database
from tests.support.process import ServiceProcess


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cores_note() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{usable_cores()} usable cores ({os.cpu_count()} on the machine), load average {load}"


@asynccontextmanager
async def bench_database(folder: Path) -> AsyncIterator[str]:
    """BILLING_BENCH_DATABASE_URL if set, else an embedded Postgres in `folder`, for the whole run."""
    configured = os.environ.get("BILLING_BENCH_DATABASE_URL")
    if configured:
        yield configured
        return
    embedded = EmbeddedPostgres(folder / "pgdata")
    admin_url = await asyncio.to_thread(embedded.start)
    try:
        await ensure_database(admin_url, DATABASE_NAME)
        yield with_database(admin_url, DATABASE_NAME)
    finally:
        await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def scratch_database(folder: Path) -> AsyncIterator[str]:
    """A new, migrated database on BILLING_BENCH_DATABASE_URL's server (else an embedded Postgres in
    `folder`), dropped at the end: a bench that loads data starts from nothing and leaves nothing."""
    embedded = None
    admin_url = os.environ.get("BILLING_BENCH_DATABASE_URL")
    if not admin_url:
        embedded = EmbeddedPostgres(folder / "pgdata")
        admin_url = await asyncio.to_thread(embedded.start)
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    try:
        await ensure_database(admin_url, name)
        url = with_database(admin_url, name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def pool_max_size(workers: int) -> int:
    """Per worker: the 64 calls in flight are spread over the workers, and all pools share one Postgres."""
    return max(4, 16 // workers)


@asynccontextmanager
async def served(
    database_url: str, *, workers: int, log_dir: Path, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """`consofta-billing serve --workers N` on `database_url`; yields its target; SIGTERM at the end."""
    server = ServiceProcess(
        {
            "DATABASE_URL": database_url,
            # The bench's own database: the sandbox moves no money.
            "BILLING_PAYMENT_PROVIDER": "sandbox",
            "BILLING_ALLOW_SANDBOX": "1",
            "BILLING_LOG_LEVEL": "warning",
            "BILLING_DB_POOL_MAX_SIZE": str(pool_max_size(workers)),
            **(env or {}),
        },
        log_dir / f"server-{workers}.log",
        args=("serve", "--workers", str(workers)),
    )
    server.env["BILLING_METRICS_PORT"] = "0"  # one free port per worker
    server.start()
    try:
        await server.wait_serving(timeout_s=120)
        if workers > 1:
            await server.wait_all_workers(workers, timeout_s=120)
        yield server.target
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.signal(signal.SIGTERM)
            await server.wait_exit(timeout_s=60)
        server.kill_quietly()
