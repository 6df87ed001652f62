"""Real Postgres for tests: a template database migrated once, cloned for each test.

With BILLING_TEST_DATABASE_URL set (an admin URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres),
tests create and drop their databases on that server. Without it they start an embedded Postgres in a
temporary folder, as a newcomer's machine would. (The variable is not DATABASE_URL on purpose: running
the tests must never touch the database a developer's shell points the service at.)
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from service.db.embedded import EmbeddedPostgres
from service.db.migrate import migrate
from service.db.pool import with_database

TEST_DATABASE_URL_ENV = "BILLING_TEST_DATABASE_URL"


class TestPostgres:
    """One Postgres server for the whole test session, and a migrated template on it."""

    __test__ = False  # not a test class, despite the name

    def __init__(self) -> None:
        self.admin_url = ""
        self.template = f"billing_tpl_{uuid.uuid4().hex[:10]}"
        self._embedded: EmbeddedPostgres | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> None:
        configured = os.environ.get(TEST_DATABASE_URL_ENV)
        if configured:
            self.admin_url = configured
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="billing-test-pg-")
            os.chmod(self._tmp.name, 0o755)  # the embedded server runs as its own user when we are root
            self._embedded = EmbeddedPostgres(Path(self._tmp.name) / "pgdata")
            self.admin_url = self._embedded.start()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'create database "{self.template}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.url(self.template))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    async def create_database(self) -> str:
        name = f"billing_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'create database "{name}" template "{self.template}"')
        finally:
            await admin.close()
        return name

    async def drop_database(self, name: str) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()

    @asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A fresh, migrated database for one test; yields its URL."""
        name = await self.create_database()
        try:
            yield self.url(name)
        finally:
            await self.drop_database(name)

    async def stop(self) -> None:
        if self.admin_url:
            await self.drop_database(self.template)
        if self._embedded is not None:
            self._embedded.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
