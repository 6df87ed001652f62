"""Migrations: replicas starting together apply each migration once; an edited released one is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import structlog

from service.db.migrate import (
    MIGRATION_LOCK_KEY,
    MigrationError,
    available_migrations,
    current_version,
    migrate,
)
from tests.support.database import TestPostgres

pytestmark = pytest.mark.usefixtures("info_logs")  # what is applied is logged at info


@pytest.fixture
async def empty_db(postgres: TestPostgres) -> AsyncIterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    name = f"billing_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.admin_url)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    try:
        yield postgres.url(name)
    finally:
        await postgres.drop_database(name)


async def test_concurrent_migrators_one_applies_the_others_wait(empty_db: str) -> None:
    latest = available_migrations()[-1].version
    replicas = 4
    blocker = await asyncpg.connect(empty_db)
    conns = [await asyncpg.connect(empty_db) for _ in range(replicas)]
    try:
        # Hold the migration lock, start every replica, and see them all queue behind it.
        blocker_tx = blocker.transaction()
        await blocker_tx.start()
        await blocker.execute("select pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        with structlog.testing.capture_logs() as logs:
            runs = [asyncio.create_task(migrate(conn)) for conn in conns]
            while True:
                # pg_stat_activity is read once per transaction and the blocker is inside one.
                await blocker.execute("select pg_stat_clear_snapshot()")
                waiting = await blocker.fetchval(
                    """
                    select count(*) from pg_stat_activity
                     where datname = current_database() and wait_event_type = 'Lock'
                       and wait_event = 'advisory'
                    """
                )
                if waiting == replicas:
                    break
                assert not any(run.done() for run in runs), "a migrator ran without the lock"
                await asyncio.sleep(0.02)
            await blocker_tx.rollback()
            versions = await asyncio.gather(*runs)
    finally:
        for conn in (blocker, *conns):
            await conn.close()
    assert versions == [latest] * replicas
    applied = [line for line in logs if line["event"] == "migration applied"]
    # Each migration applied exactly once, all by the same replica (the first to get the lock).
    assert sorted(line["version"] for line in applied) == [m.version for m in available_migrations()]
    check = await asyncpg.connect(empty_db)
    try:
        assert await current_version(check) == latest
        rows = await check.fetch("select version, count(*) as n from schema_migrations group by version")
        assert {row["version"]: row["n"] for row in rows} == {m.version: 1 for m in available_migrations()}
    finally:
        await check.close()


async def test_an_edited_released_migration_is_refused(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        # What the database recorded no longer matches the file: as if 0001 had been edited after release.
        await conn.execute("update schema_migrations set checksum = 'edited' where version = 1")
        with pytest.raises(MigrationError, match=r"0001_foundation\.sql was edited after it was applied"):
            await migrate(conn)
        await conn.execute(
            "update schema_migrations set checksum = $1 where version = 1", available_migrations()[0].checksum
        )
        assert await migrate(conn) == available_migrations()[-1].version
    finally:
        await conn.close()


async def test_the_schema_version_is_logged_at_start(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        with structlog.testing.capture_logs() as logs:
            await migrate(conn)
    finally:
        await conn.close()
    assert {
        "event": "schema version",
        "version": available_migrations()[-1].version,
        "log_level": "info",
    } in logs
