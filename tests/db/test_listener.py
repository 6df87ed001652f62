"""service.db.listener against a real Postgres: LISTEN survives its backend being killed."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from service.db.listener import Listener

CHANNEL = "listener_test"
WAIT_S = 10.0


class Heard:
    """What a listener's callbacks saw, as a caller would record it."""

    def __init__(self) -> None:
        self.notifications: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.reconnects = 0
        self.reconnected = asyncio.Event()

    def on_notify(self, channel: str, payload: str) -> None:
        self.notifications.put_nowait((channel, payload))

    def on_reconnect(self) -> None:
        self.reconnects += 1
        self.reconnected.set()


async def listener_pids(conn: asyncpg.Connection, application_name: str) -> list[int]:
    rows = await conn.fetch("select pid from pg_stat_activity where application_name = $1", application_name)
    return [row["pid"] for row in rows]


async def test_a_notify_after_the_backend_is_terminated_is_delivered_and_on_reconnect_is_called(
    db_url: str,
) -> None:
    name = f"listener-test-{uuid.uuid4().hex[:8]}"
    heard = Heard()
    listener = Listener(
        db_url, (CHANNEL,), heard.on_notify, heard.on_reconnect, application_name=name, retry_s=0.05
    )
    await listener.start()
    other = await asyncpg.connect(db_url)
    try:
        await other.execute("select pg_notify($1, 'before')", CHANNEL)
        assert await asyncio.wait_for(heard.notifications.get(), WAIT_S) == (CHANNEL, "before")
        [first_pid] = await listener_pids(other, name)

        assert await other.fetchval("select pg_terminate_backend($1)", first_pid)
        await asyncio.wait_for(heard.reconnected.wait(), WAIT_S)

        [second_pid] = await listener_pids(other, name)
        assert second_pid != first_pid
        await other.execute("select pg_notify($1, 'after')", CHANNEL)
        assert await asyncio.wait_for(heard.notifications.get(), WAIT_S) == (CHANNEL, "after")
        assert heard.reconnects == 1
    finally:
        await other.close()
        await listener.close()


async def test_a_closed_listener_does_not_reconnect(db_url: str) -> None:
    name = f"listener-test-{uuid.uuid4().hex[:8]}"
    heard = Heard()
    listener = Listener(
        db_url, (CHANNEL,), heard.on_notify, heard.on_reconnect, application_name=name, retry_s=0.05
    )
    await listener.start()
    await listener.close()

    other = await asyncpg.connect(db_url)
    try:
        await asyncio.sleep(0.2)
        assert await listener_pids(other, name) == []
        assert heard.reconnects == 0
    finally:
        await other.close()
