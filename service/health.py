"""grpc.health.v1: SERVING only while the database answers.

A background probe sets the status, so Check itself never touches the database (the benchmark uses
Check as the cost of an RPC that does no work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import asyncpg
import structlog
from grpc_health.v1 import health, health_pb2

log = structlog.get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# How long shutdown waits for the last probe and for the servicer to go NOT_SERVING.
SHUTDOWN_WAIT_S = 2.0


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpcio's servicer, with List (which its base leaves NotImplemented) answered from the same table."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


class DatabaseHealth:
    def __init__(self, pool: asyncpg.Pool, services: Iterable[str], interval_s: float) -> None:
        self.servicer = HealthServicer()
        self._pool = pool
        self._services = ["", *services]  # "" is the server as a whole
        self._interval_s = interval_s
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        for name in self._services:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        log.info("health", status="SERVING" if serving else "NOT_SERVING")

    async def probe_once(self) -> bool:
        try:
            await asyncio.wait_for(self._pool.fetchval("select 1"), timeout=max(self._interval_s, 1.0))
            ok = True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            ok = False
            if not self._stopping:  # the pool closing under a last probe is shutdown, not an outage
                log.warning("database probe failed", error=str(exc))
        if not self._stopping:
            await self._set(ok)
        return ok

    async def _loop(self) -> None:
        while not self._stopping:
            await self.probe_once()
            await asyncio.sleep(self._interval_s)

    async def start(self) -> None:
        await self.probe_once()
        self._task = asyncio.create_task(self._loop(), name="health-probe")

    async def enter_graceful_shutdown(self) -> None:
        """Go NOT_SERVING for good, so load balancers drain us before the server stops."""
        self._stopping = True
        if self._task is not None:
            # Waited for, so that no probe outlives the pool it uses (asyncio.wait_for can swallow a
            # cancel that lands as the query completes; the loop's own check ends it then). Bounded,
            # so a probe stuck on a connection or on the servicer's lock never holds the shutdown.
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=SHUTDOWN_WAIT_S)
            if not done:
                log.warning("health probe still running at shutdown; leaving it", waited_s=SHUTDOWN_WAIT_S)
            self._task = None
        try:
            # grpcio's servicer takes a lock that a Watch stream holds while its write waits on a slow
            # reader; the shutdown goes on without it rather than wait for that reader.
            await asyncio.wait_for(self.servicer.enter_graceful_shutdown(), timeout=SHUTDOWN_WAIT_S)
        except TimeoutError:
            log.warning("health servicer did not confirm NOT_SERVING in time", waited_s=SHUTDOWN_WAIT_S)
