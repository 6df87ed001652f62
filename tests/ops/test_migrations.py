"""Migrations: replicas starting together apply each migration once; an edited released one is refused;
changed repeatable definitions are re-applied; a database of the squashed first history is upgraded and
any other unknown history refused."""

from __future__ import annotations

import asyncio
import hashlib
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import structlog

from service.db.migrate import (
    MIGRATION_LOCK_KEY,
    MigrationError,
    available_migrations,
    available_repeatables,
    current_version,
    migrate,
)
from service.db.schema_dump import dump_schema
from tests.support.database import TestPostgres

pytestmark = pytest.mark.usefixtures("info_logs")  # what is applied is logged at info

# The first history, squashed into 0001_baseline.sql; kept as the test's fixture, not as code.
# The released migrations 0001-0008 as they were, compressed: they are history, and their old function
# definitions must not read as live ones in the tree.
LEGACY_ARCHIVE = Path(__file__).resolve().parent / "legacy_migrations.tar.gz"


def legacy_migrations() -> list[tuple[str, str]]:
    """(file name, SQL) of each released migration, in order."""
    with tarfile.open(LEGACY_ARCHIVE) as archive:
        members = sorted((m for m in archive.getmembers() if m.name.endswith(".sql")), key=lambda m: m.name)
        found = []
        for member in members:
            data = archive.extractfile(member)
            assert data is not None
            found.append((Path(member.name).name, data.read().decode("utf-8")))
    return found


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
    applied = [line for line in logs if line["event"] == "migrations applied"]
    # Each migration applied exactly once, all by the same replica (the first to get the lock).
    assert len(applied) == 1
    assert applied[0]["versions"] == [m.version for m in available_migrations()]
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
        with pytest.raises(MigrationError, match=r"0001_baseline\.sql was edited after it was applied"):
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


async def _apply_legacy_history(url: str, upto: int = 8) -> None:
    """Build a database as the migrator of the first history did: each old file, and its row."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(
                """
                create table schema_migrations (
                    version    integer primary key,
                    name       text not null,
                    checksum   text not null,
                    applied_at timestamptz not null default now()
                )
                """
            )
            for name, sql in legacy_migrations()[:upto]:
                await conn.execute(sql)
                await conn.execute(
                    "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                    int(name[:4]),
                    name,
                    hashlib.sha256(sql.encode()).hexdigest(),
                )
    finally:
        await conn.close()


async def _dump(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await dump_schema(conn)
    finally:
        await conn.close()


_RECORD_EMAILS = """
select * from record_usage(p_usage_record_id => $1, p_company_id => 'legacy', p_idempotency_key => $2,
                           p_request_hash => '\\x00', p_usage_type => 'email', p_rate_key => 'email',
                           p_direction => null, p_number_type => null, p_quantity => $3,
                           p_sms_encoding => null, p_billable_units => $3, p_occurred_at => now())
"""


async def test_a_database_of_the_first_history_is_upgraded_to_the_baseline(
    empty_db: str, postgres: TestPostgres
) -> None:
    await _apply_legacy_history(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        # History the upgrade must carry over: a wallet with a usage debit written by the old functions.
        await conn.execute("insert into companies values ('legacy', 'Legacy', 'req-legacy')")
        await conn.execute("insert into wallets (company_id) values ('legacy')")
        await conn.execute(_RECORD_EMAILS, uuid.uuid4(), "k1", 3)
        with structlog.testing.capture_logs() as logs:
            assert await migrate(conn) == available_migrations()[-1].version
        assert {"event": "legacy schema upgraded to the baseline", "baseline": "0001_baseline.sql"} in [
            {k: v for k, v in line.items() if k in ("event", "baseline")} for line in logs
        ]
        # The old eight rows became the baseline's, and the migrations after the baseline ran on top.
        rows = await conn.fetch("select version, name, checksum from schema_migrations order by version")
        assert [tuple(row) for row in rows] == [
            (m.version, m.name, m.checksum) for m in available_migrations()
        ]
        repeatables = await conn.fetch("select name, checksum from schema_repeatables order by name")
        assert {row["name"]: row["checksum"] for row in repeatables} == {
            r.name: r.checksum for r in available_repeatables()
        }
        # The new functions work on the old data: the chain continues from the old debit.
        row = await conn.fetchrow(_RECORD_EMAILS, uuid.uuid4(), "k2", 2)
        assert row is not None and row["ledger_sequence"] == 2
        assert await migrate(conn) == available_migrations()[-1].version  # and nothing left to do
    finally:
        await conn.close()
    assert await _dump(empty_db) == await _dump(postgres.url(postgres.template))


async def test_a_partial_first_history_is_refused_naming_what_was_found(empty_db: str) -> None:
    await _apply_legacy_history(empty_db, upto=5)
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(MigrationError, match=r"it has 1 0001_foundation\.sql, .*5 0005_recharge\.sql;"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_a_foreign_history_is_refused(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn)
        await conn.execute("update schema_migrations set name = '0001_something_else.sql' where version = 1")
        with pytest.raises(
            MigrationError,
            match=r"it has 1 0001_something_else\.sql, .*; this code expects 1 0001_baseline\.sql",
        ):
            await migrate(conn)
    finally:
        await conn.close()


async def test_a_changed_repeatable_is_reapplied_and_an_unchanged_one_is_not(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("update schema_repeatables set checksum = 'older' where name = 'held_nanos.sql'")
        # As if an older held_nanos() were in force: the migrator must put the file's definition back.
        await conn.execute("create or replace function held_nanos(p_company_id text) returns bigint "
                           "language sql stable as $$ select -1::bigint $$")  # fmt: skip
        with structlog.testing.capture_logs() as logs:
            await migrate(conn)
        applied = [line["names"] for line in logs if line["event"] == "repeatables applied"]
        assert applied == [["held_nanos.sql"]]
        assert await conn.fetchval("select held_nanos('nobody')") == 0
        with structlog.testing.capture_logs() as logs:
            await migrate(conn)
        assert not [line for line in logs if line["event"] == "repeatables applied"]
    finally:
        await conn.close()


async def test_every_repeatable_is_applied_after_a_numbered_migration(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        with structlog.testing.capture_logs() as logs:
            await migrate(conn)
    finally:
        await conn.close()
    events = [(line["event"], line.get("names")) for line in logs if line["event"].endswith("applied")]
    assert events == [
        ("migrations applied", [m.name for m in available_migrations()]),
        ("repeatables applied", [r.name for r in available_repeatables()]),
    ]
