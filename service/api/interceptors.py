"""Server interceptor: request ids, the canonical log line per RPC, and domain-error mapping.

One line per RPC (method, status code, company, duration, request id) is written here and nowhere
else. The request id comes from the caller's `x-request-id` metadata or is generated, is bound into
structlog's context for every line logged while the RPC runs, and goes back in trailing metadata.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc.aio import ServicerContext

from service.api.errors import rich_status
from service.domain.errors import BillingError
from service.metrics import observe_rpc

log = structlog.get_logger("rpc")

REQUEST_ID_KEY = "x-request-id"
GRPC_DETAILS_KEY = "grpc-status-details-bin"
_MAX_REQUEST_ID_CHARS = 128


def _request_id(context: ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID_CHARS:
            return value
    return uuid.uuid4().hex


class _Call:
    """What the canonical line needs to know about one RPC while it runs."""

    def __init__(self, method: str, context: ServicerContext[Any, Any], request: Any) -> None:
        self.method = method
        self.context = context
        self.company_id = getattr(request, "company_id", "") or None
        self.request_id = _request_id(context)
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.finished = False
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))

    async def fail(self, error: BaseException) -> None:
        """Abort the RPC for `error`; always raises."""
        if isinstance(error, BillingError):
            code, message, details = rich_status(error)
            self.code = code
            # abort() sends the status at once: write the line (and count the RPC) first, so that whoever
            # sees the status can also see its line and its metrics.
            self.finish()
            await self.context.abort(
                code,
                message,
                trailing_metadata=((REQUEST_ID_KEY, self.request_id), (GRPC_DETAILS_KEY, details)),
            )
        self.code = grpc.StatusCode.INTERNAL
        log.exception("unhandled error", method=self.method)
        self.finish()
        await self.context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error (request id {self.request_id})",
            trailing_metadata=((REQUEST_ID_KEY, self.request_id),),
        )

    def aborted(self) -> None:
        """The servicer itself aborted: take the code it set."""
        code = self.context.code()
        self.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN

    def finish(self) -> None:
        """Write the canonical line and count the RPC, once."""
        if self.finished:
            return
        self.finished = True
        duration_s = time.perf_counter() - self.started
        observe_rpc(self.method, self.code.name, duration_s)
        fields: dict[str, Any] = {
            "method": self.method,
            "code": self.code.name,
            "duration_ms": round(duration_s * 1000, 3),
            "request_id": self.request_id,
        }
        if self.company_id:
            fields["company_id"] = self.company_id
        if self.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            log.error("rpc", **fields)
        else:
            log.info("rpc", **fields)
        structlog.contextvars.unbind_contextvars("request_id")


class Drain:
    """Calls in flight, so that shutdown can end each one with UNAVAILABLE rather than a bare cancel.

    gRPC's own `server.stop(grace)` cancels what is still running when the grace period ends, and the
    caller sees CANCELLED, which clients do not retry. Draining first ends those calls ourselves with
    UNAVAILABLE ("retry elsewhere with the same key"), and refuses new calls the same way.
    """

    def __init__(self) -> None:
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.draining = False

    def enter(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.in_flight.discard(task)

    def refuse_new_calls(self) -> None:
        """From now on new calls get UNAVAILABLE; those in flight carry on."""
        self.draining = True

    async def drain(self, grace_s: float) -> int:
        """Refuse new calls, wait `grace_s` at most for calls in flight, end the rest; count those."""
        self.refuse_new_calls()
        deadline = asyncio.get_running_loop().time() + grace_s
        # Polled: a 20 ms step is nothing next to a grace period, and the hot path stays a set add/discard.
        while self.in_flight and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        left = list(self.in_flight)
        for task in left:
            task.cancel(_DRAIN_MESSAGE)
        # Each cancelled call rolls back its statement and aborts with UNAVAILABLE; give them a moment.
        for _ in range(100):
            if not self.in_flight:
                break
            await asyncio.sleep(0.01)
        return len(left)


_DRAIN_MESSAGE = "server shutting down"
_UNAVAILABLE_MESSAGE = "the server is shutting down; retry with the same idempotency key"


async def _refuse(call: _Call) -> None:
    call.code = grpc.StatusCode.UNAVAILABLE
    call.finish()
    await call.context.abort(
        grpc.StatusCode.UNAVAILABLE,
        _UNAVAILABLE_MESSAGE,
        trailing_metadata=((REQUEST_ID_KEY, call.request_id),),
    )


async def _cancelled(call: _Call, drain: Drain) -> None:
    """The call's task was cancelled: by our drain (answer UNAVAILABLE) or by gRPC (the caller went away)."""
    task = asyncio.current_task()
    if drain.draining and task is not None:
        task.uncancel()
        await _refuse(call)
    call.code = grpc.StatusCode.CANCELLED


def _wrap_unary(
    method: str, behavior: Callable[..., Awaitable[Any]], drain: Drain
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> Any:
        call = _Call(method, context, request)
        task = drain.enter()
        try:
            if drain.draining:
                await _refuse(call)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            if call.code is grpc.StatusCode.OK:
                call.aborted()
            raise
        except asyncio.CancelledError:
            await _cancelled(call, drain)
            raise
        except BillingError as error:
            await call.fail(error)
        except Exception as error:
            await call.fail(error)
        finally:
            drain.leave(task)
            call.finish()

    return handler


def _wrap_server_stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]], drain: Drain
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = _Call(method, context, request)
        task = drain.enter()
        try:
            if drain.draining:
                await _refuse(call)
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            if call.code is grpc.StatusCode.OK:
                call.aborted()
            raise
        except asyncio.CancelledError:
            await _cancelled(call, drain)
            raise
        except BillingError as error:
            await call.fail(error)
        except Exception as error:
            await call.fail(error)
        finally:
            drain.leave(task)
            call.finish()

    return handler


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    # Health and reflection are infrastructure: no canonical line, no overhead (the benchmark uses Check
    # as the cost of an RPC that does no work).
    _SKIP_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

    def __init__(self) -> None:
        self.drain = Drain()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._SKIP_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self.drain),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_server_stream(method, handler.unary_stream, self.drain),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
