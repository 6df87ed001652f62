"""Versioned SQL migrations from service/migrations/NNNN_name.sql, applied in order.

Safe when several replicas start at once: each takes a transaction-scoped advisory lock before looking
at the schema version, so one applies and the others wait, then find nothing left to do. A released
migration is never edited; its checksum is recorded and a mismatch stops the start.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# An arbitrary constant that names "the schema migration lock" for pg_advisory_xact_lock.
MIGRATION_LOCK_KEY = 0x0C0_B111
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("service.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        create table if not exists schema_migrations (
            version    integer primary key,
            name       text not null,
            checksum   text not null,
            applied_at timestamptz not null default now()
        )
        """
    )


async def current_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
    if not exists:
        return 0
    return int(await conn.fetchval("select coalesce(max(version), 0) from schema_migrations"))


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply what is missing; return the schema version now in force."""
    migrations = available_migrations()
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await _ensure_table(conn)
        applied = {
            row["version"]: row
            for row in await conn.fetch("select version, name, checksum from schema_migrations")
        }
        for migration in migrations:
            done = applied.get(migration.version)
            if done is not None:
                if done["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was edited after it was applied; add a new one instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            log.info("migration applied", version=migration.version, name=migration.name)
        unknown = sorted(set(applied) - {m.version for m in migrations})
        if unknown:
            # A newer replica got there first (rolling deploy); older code keeps running on a schema
            # that only ever grows backwards-compatibly, so this is worth a warning, not a refusal.
            log.warning("database has newer migrations than this code", unknown_versions=unknown)
    version = migrations[-1].version if migrations else 0
    log.info("schema version", version=version)
    return version
