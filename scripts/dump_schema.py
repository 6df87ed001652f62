"""Rewrite service/sql/schema.sql from a freshly migrated database, or check that it is current.

    python3 dev.py run python scripts/dump_schema.py           # rewrite the file
    python3 dev.py run python scripts/dump_schema.py --check   # exit 1 when it differs

Uses the server of BILLING_TEST_DATABASE_URL when set (an admin URL), else an embedded Postgres in a
temporary folder, as the tests do. The dump is the same on every supported Postgres version.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from service.db.schema_dump import dump_schema  # noqa: E402
from tests.support.database import TestPostgres  # noqa: E402

SCHEMA_FILE = ROOT / "service" / "sql" / "schema.sql"


async def fresh_dump() -> str:
    postgres = TestPostgres()
    try:
        await postgres.start()
        conn = await asyncpg.connect(postgres.url(postgres.template))
        try:
            return await dump_schema(conn)
        finally:
            await conn.close()
    finally:
        await postgres.stop()


def main() -> int:
    dump = asyncio.run(fresh_dump())
    if "--check" in sys.argv[1:]:
        if SCHEMA_FILE.read_text(encoding="utf-8") != dump:
            print(
                f"{SCHEMA_FILE.relative_to(ROOT)} is out of date: run scripts/dump_schema.py", file=sys.stderr
            )
            return 1
        return 0
    SCHEMA_FILE.write_text(dump, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
