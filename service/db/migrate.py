"""The schema: numbered migrations, then repeatable definitions, applied under one advisory lock.

Two kinds of SQL file:

* Numbered migrations, service/migrations/NNNN_name.sql, applied once each, in order. They hold
  tables, indexes, constraints and data only, and never call a function from service/sql/ (on a fresh
  database those do not exist yet while the migrations run). A released migration is never edited; its
  checksum is recorded in schema_migrations and a mismatch stops the start.
* Repeatable definitions, service/sql/*.sql, one file per function with its triggers, written as
  `create or replace function` / `create or replace trigger`. After the numbered migrations, in the order
  of service.sql.APPLY_ORDER, a file is applied again when its checksum differs from the one recorded in
  schema_repeatables, and every file is applied again whenever a numbered migration was applied in the
  same run (a changed table may need its functions recreated). To change a function, edit its file.
  `create or replace` cannot change a function's signature (argument types, their names, the result),
  and a new argument list would create a second function beside the old one; so a signature change
  also adds a numbered migration that drops the old function (`drop function if exists
  name(old argument types)`), and its file then creates the new one.

Safe when several replicas start at once: each takes a transaction-scoped advisory lock before looking
at the schema version, so one applies and the others wait, then find nothing left to do.

The baseline 0001_baseline.sql replaced the first history (0001_foundation.sql ...
0008_append_ledger_entry.sql), never released. A database created by those eight files is recognized by
their names and checksums and brought onto the baseline: the two functions whose signatures changed are
dropped, its schema_migrations rows become the baseline's row and the repeatables are applied. A
database with any other history this code does not know is refused, naming what it found.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from service.sql import APPLY_ORDER

log = structlog.get_logger(__name__)

# An arbitrary constant that names "the schema migration lock" for pg_advisory_xact_lock.
MIGRATION_LOCK_KEY = 0x0C0_B111
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")

# The first history, squashed into 0001_baseline.sql: (version, name, sha256 of the file).
LEGACY_MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "0001_foundation.sql", "960222979b62cda9cbc29fa8c583ac8ac0f055712337d7b3357eaa67085d365e"),
    (2, "0002_settings_and_cards.sql", "f43eea30f0a377e357991d782fc41fad3823799812c4db12170f3a1f17ad302f"),
    (3, "0003_wallet_events.sql", "956154ef7e5d038df4c4af6d2467e7135b0ef067292cfadaee88f1d2e059880a"),
    (4, "0004_wallet_holds.sql", "e7f3a5bb9b246b534b571926e9efa0d920204f0124ab60c623f6247eca0e4ab2"),
    (5, "0005_recharge.sql", "83d7a4a9cc46e5b3e2aad8441c46c98c7962687890d99913f1dfe0fa86dcbe1a"),
    (6, "0006_reporting.sql", "2dd07e4b703e0585205de090686b04001dd12075f4e0e37618ea6ce6c7daa0de"),
    (7, "0007_settings_requests.sql", "9da21d3ea7f2450993ea986f2c553c8702922bd8105f38ca7a7954f0c12a537f"),
    (8, "0008_append_ledger_entry.sql", "58f4c9429409f05e1c04ae06d017cbe9edb3736a4e86f0bd435e52faf5b0bd53"),
)

# What differs between a database built by the first history and the baseline plus service/sql/, once
# the repeatables are applied: two signatures grew an optional argument (so the old functions would
# stay beside the new ones), and one check constraint was added NOT VALID to a table that had rows.
_LEGACY_UPGRADE_SQL = """
drop function record_usage(uuid, text, text, bytea, text, text, text, text, bigint, text, bigint,
                           timestamptz, uuid);
drop function append_ledger_entry(text, text, bigint, text, text, uuid);
alter table ledger_entries validate constraint ledger_entries_recharge_has_reference;
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Repeatable:
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
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


def available_repeatables() -> list[Repeatable]:
    """The files of service/sql/, in the order they are applied."""
    folder = resources.files("service.sql")
    return [Repeatable(name, (folder / name).read_text(encoding="utf-8")) for name in APPLY_ORDER]


async def _ensure_tables(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        create table if not exists schema_migrations (
            version    integer primary key,
            name       text not null,
            checksum   text not null,
            applied_at timestamptz not null default now()
        );
        create table if not exists schema_repeatables (
            name       text primary key,
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


def _describe(applied: dict[int, asyncpg.Record]) -> str:
    return ", ".join(f"{version} {applied[version]['name']}" for version in sorted(applied))


async def _upgrade_legacy(conn: asyncpg.Connection, baseline: Migration) -> None:
    await conn.execute(_LEGACY_UPGRADE_SQL)
    await conn.execute("delete from schema_migrations")
    await conn.execute(
        "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
        baseline.version,
        baseline.name,
        baseline.checksum,
    )
    log.info("legacy schema upgraded to the baseline", baseline=baseline.name)


def _check_history(applied: dict[int, asyncpg.Record], migrations: list[Migration]) -> None:
    """Refuse a database whose recorded migrations are not this code's (newer versions are allowed)."""
    ours = {m.version: m for m in migrations}
    foreign = {v: row for v, row in applied.items() if v in ours and row["name"] != ours[v].name}
    if foreign:
        raise MigrationError(
            f"the database's schema history is not this code's: it has {_describe(applied)}; this code "
            f"expects {', '.join(f'{m.version} {m.name}' for m in migrations)}. Only a database built by "
            "the complete first history (0001_foundation.sql ... 0008_append_ledger_entry.sql) is "
            "upgraded automatically"
        )
    for version, row in applied.items():
        if version in ours and row["checksum"] != ours[version].checksum:
            raise MigrationError(
                f"migration {ours[version].name} was edited after it was applied; add a new one instead"
            )


async def _apply_repeatables(conn: asyncpg.Connection, *, all_of_them: bool) -> None:
    recorded = {
        row["name"]: row["checksum"]
        for row in await conn.fetch("select name, checksum from schema_repeatables")
    }
    names = []
    for repeatable in available_repeatables():
        if not all_of_them and recorded.get(repeatable.name) == repeatable.checksum:
            continue
        await conn.execute(repeatable.sql)
        await conn.execute(
            """
            insert into schema_repeatables (name, checksum) values ($1, $2)
            on conflict (name) do update set checksum = excluded.checksum, applied_at = now()
            """,
            repeatable.name,
            repeatable.checksum,
        )
        names.append(repeatable.name)
    if names:
        # One line for all of them: a first start applies every file, and each would be a line of noise.
        log.info("repeatables applied", names=names)


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply what is missing; return the schema version now in force."""
    migrations = available_migrations()
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await _ensure_tables(conn)
        applied = {
            row["version"]: row
            for row in await conn.fetch("select version, name, checksum from schema_migrations")
        }
        changed = False
        done: list[Migration] = []
        legacy = {(version, name, checksum) for version, name, checksum in LEGACY_MIGRATIONS}
        if {(v, row["name"], row["checksum"]) for v, row in applied.items()} == legacy and migrations:
            await _upgrade_legacy(conn, migrations[0])
            applied = {
                row["version"]: row
                for row in await conn.fetch("select version, name, checksum from schema_migrations")
            }
            changed = True
        _check_history(applied, migrations)
        for migration in migrations:
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            changed = True
            done.append(migration)
        if done:
            log.info("migrations applied", versions=[m.version for m in done], names=[m.name for m in done])
        unknown = sorted(set(applied) - {m.version for m in migrations})
        if unknown:
            # A newer replica got there first (rolling deploy); older code keeps running on a schema
            # that only ever grows backwards-compatibly, so this is worth a warning, not a refusal. Its
            # function definitions are newer too: this code leaves them as they are.
            log.warning("database has newer migrations than this code", unknown_versions=unknown)
        else:
            await _apply_repeatables(conn, all_of_them=changed)
    version = migrations[-1].version if migrations else 0
    log.info("schema version", version=version)
    return version
