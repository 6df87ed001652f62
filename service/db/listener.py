"""LISTEN on a dedicated connection that comes back by itself after it drops.

LISTEN needs a connection of its own that is never returned to the pool. When that connection drops
(a restart, a failover, pg_terminate_backend), every NOTIFY sent until the next LISTEN is lost for
good: Postgres does not queue notifications for a session that is gone. So after reconnecting, the
listener calls ``on_reconnect``, and the caller re-reads whatever it may have missed instead of
trusting that nothing happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import asyncpg
import structlog

log = structlog.get_logger(__name__)

RETRY_S = 1.0


class Listener:
    """LISTEN on ``channels``; ``on_notify(channel, payload)`` for each notification.

    Both callbacks run on the event loop and must not block: set an event, add to a set.
    """

    def __init__(
        self,
        database_url: str,
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
        *,
        application_name: str,
        retry_s: float = RETRY_S,
    ) -> None:
        self._url = database_url
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._application_name = application_name
        self._retry_s = retry_s
        self._conn: asyncpg.Connection | None = None
        # Set when the current connection terminates; each connection gets a new one, so a late
        # termination of an old connection cannot be mistaken for the loss of the current one.
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Connect and LISTEN; raises if the database cannot be reached now."""
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name=f"listen-{self._application_name}")

    async def close(self) -> None:
        self._closed = True
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url, server_settings={"application_name": self._application_name})
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._dispatch)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._lost = lost

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self._on_notify(channel, str(payload))

    async def _supervise(self) -> None:
        while not self._closed:
            await self._lost.wait()
            if self._closed:
                return
            log.warning("LISTEN connection lost; reconnecting", channels=self._channels)
            while not self._closed:
                try:
                    await self._connect()
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("LISTEN reconnect failed; retrying", channels=self._channels, error=str(exc))
                    await asyncio.sleep(self._retry_s)
            if self._closed:
                return
            log.info("LISTEN connection re-established", channels=self._channels)
            self._on_reconnect()
