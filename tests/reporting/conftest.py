"""Fixtures for the reporting tests: a direct connection for writing history, and usage of every kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest

from service.domain.usage_kinds import CallUsage, Direction, EmailUsage, NumberType, SmsUsage, Usage

EVERY_KIND: list[Usage] = [
    EmailUsage(1000),
    EmailUsage(3),
    CallUsage(Direction.OUTBOUND, NumberType.LOCAL, 61),
    CallUsage(Direction.OUTBOUND, NumberType.TOLL_FREE, 600),
    CallUsage(Direction.INBOUND, NumberType.LOCAL, 3599),
    CallUsage(Direction.INBOUND, NumberType.TOLL_FREE, 1),
    SmsUsage(Direction.OUTBOUND, body="x" * 161),
    SmsUsage(Direction.OUTBOUND, body="Привет"),
    SmsUsage(Direction.INBOUND, segments=3),
]


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


async def create_company(
    conn: asyncpg.Connection, company_id: str, created_at: datetime | None = None
) -> str:
    await conn.execute(
        "insert into companies (company_id, display_name, create_request_id) values ($1, $1, $1)", company_id
    )
    await conn.execute("insert into wallets (company_id) values ($1)", company_id)
    await conn.execute("insert into billing_settings (company_id) values ($1)", company_id)
    return company_id
