"""A webhook receiver on 127.0.0.1, port 0: records every request and answers as it is told to."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    at: float  # time.perf_counter() when the request arrived
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


# Decides the answer to a request: (status, seconds to wait before answering).
Responder = Callable[[dict[str, Any], int], tuple[int, float]]


def always_ok(_event: dict[str, Any], _nth: int) -> tuple[int, float]:
    return 200, 0.0


@dataclass
class Receiver:
    respond: Responder = always_ok
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    # Requests per event id as they arrive (before any answer), so a slow answer does not hide a retry.
    _counts: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        event = json.loads(body)
        nth = self._counts.get(event["id"], 0)
        self._counts[event["id"]] = nth + 1
        status, delay_s = self.respond(event, nth)
        if delay_s:
            await asyncio.sleep(delay_s)
        async with self._arrived:
            self.received.append(Received(arrived, dict(request.headers), body, status))
            self._arrived.notify_all()
        return web.Response(status=status, text="ok" if status < 300 else "no")

    def succeeded(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 15.0) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: predicate(self.received)), timeout_s)
