"""service/sql/: every definition file is in the stated apply order, and the committed schema dump is
exactly what a freshly migrated database dumps (CI fails on drift, on Postgres 15 and 18 alike)."""

from __future__ import annotations

import difflib
from pathlib import Path

import asyncpg

from service.db.schema_dump import dump_schema
from service.sql import APPLY_ORDER, SCHEMA_DUMP
from tests.support.database import TestPostgres

SQL_DIR = Path(__file__).resolve().parents[2] / "service" / "sql"


def test_every_definition_file_is_in_the_apply_order_once() -> None:
    on_disk = sorted(p.name for p in SQL_DIR.glob("*.sql") if p.name != SCHEMA_DUMP)
    assert sorted(APPLY_ORDER) == on_disk
    assert len(set(APPLY_ORDER)) == len(APPLY_ORDER)


async def test_the_committed_schema_dump_matches_a_migrated_database(postgres: TestPostgres) -> None:
    conn = await asyncpg.connect(postgres.url(postgres.template))
    try:
        dumped = await dump_schema(conn)
    finally:
        await conn.close()
    committed = (SQL_DIR / SCHEMA_DUMP).read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True), dumped.splitlines(keepends=True), "committed", "migrated"
        )
    )
    assert committed == dumped, (
        "service/sql/schema.sql differs from a freshly migrated database; regenerate it with "
        f"`python3 dev.py run python scripts/dump_schema.py`:\n{diff}"
    )
