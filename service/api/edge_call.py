"""One RPC at the edge, as an async context manager around its handler, unary or server-streaming.

It puts together the edge's separate jobs in the order the caller must see them: the request id
(`request_log`), refusal and cancellation while the server drains (`drain`), the status an exception
becomes (`errors`), and, once, just before the status is sent, the canonical line and the RPC's
metrics (`service.metrics`), so that whoever sees a status can also see its line and its count.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, NoReturn

import grpc
from grpc.aio import ServicerContext

from service.api.drain import UNAVAILABLE_MESSAGE, Drain
from service.api.errors import GRPC_DETAILS_KEY, status_of
from service.api.request_log import (
    REQUEST_ID_KEY,
    bind_request_id,
    loggable_company_id,
    request_id_of,
    write_line,
)
from service.metrics import observe_rpc


class EdgeCall:
    """`async with EdgeCall(...)` around a handler's body; a class, not a generator, to stay cheap."""

    __slots__ = (
        "code",
        "company_id",
        "context",
        "drain",
        "finished",
        "method",
        "request_id",
        "started",
        "task",
    )

    def __init__(self, method: str, context: ServicerContext[Any, Any], request: Any, drain: Drain) -> None:
        self.method = method
        self.context = context
        self.drain = drain
        # Logged before the handler validates it: only a valid id, or a short prefix of a bad one.
        self.company_id = loggable_company_id(getattr(request, "company_id", "") or "")
        self.request_id = request_id_of(context)
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.finished = False
        self.task: asyncio.Task[Any] | None = None
        bind_request_id(context, self.request_id)

    async def __aenter__(self) -> EdgeCall:
        if self.drain.draining:
            await self._refuse()
        self.task = self.drain.enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if error is None:
                return
            if isinstance(error, grpc.aio.AbortError):
                # The servicer aborted itself, or we did below: keep the code already chosen.
                if self.code is grpc.StatusCode.OK:
                    code = self.context.code()
                    self.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            elif isinstance(error, asyncio.CancelledError):
                await self._cancelled()
            elif isinstance(error, Exception):
                await self._fail(error)
        finally:
            self.drain.leave(self.task)
            self.finish()

    def finish(self) -> None:
        """Write the canonical line and count the RPC, once."""
        if self.finished:
            return
        self.finished = True
        duration_s = time.perf_counter() - self.started
        observe_rpc(self.method, self.code.name, duration_s)
        write_line(self.method, self.code, duration_s, self.request_id, self.company_id)

    async def _abort(self, code: grpc.StatusCode, message: str, details: bytes | None = None) -> NoReturn:
        self.code = code
        # abort() sends the status at once: the line and the metrics go first.
        self.finish()
        metadata: tuple[tuple[str, str | bytes], ...] = ((REQUEST_ID_KEY, self.request_id),)
        if details is not None:
            metadata += ((GRPC_DETAILS_KEY, details),)
        await self.context.abort(code, message, trailing_metadata=metadata)

    async def _refuse(self) -> NoReturn:
        await self._abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)

    async def _fail(self, error: Exception) -> NoReturn:
        await self._abort(*status_of(error, self.method, self.request_id))

    async def _cancelled(self) -> None:
        """Cancelled by our drain (answer UNAVAILABLE) or by gRPC (the caller went away: CANCELLED)."""
        task = asyncio.current_task()
        if self.drain.draining and task is not None:
            task.uncancel()
            await self._refuse()
        self.code = grpc.StatusCode.CANCELLED
