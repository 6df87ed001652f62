"""The server interceptor: every RPC but health and reflection runs inside one `EdgeCall`.

What an `EdgeCall` does (request id and log line, metrics, error mapping, the shutdown drain) lives in
`service.api.edge_call` and the modules it names; here are only the two handler shapes gRPC has. Inside
the EdgeCall a unary call that came without a deadline gets the server's default one. Streams get none:
WatchWalletEvents is open-ended by design, and an export's statements are bounded by the database's
statement timeout. (The per-caller and per-method limits are an interceptor of their own,
`service.api.limits.LimitsInterceptor`, after authentication, inside the EdgeCall.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from service.api.decoding import Undecodable, tolerant
from service.api.drain import Drain
from service.api.edge_call import EdgeCall
from service.api.wrapped_handlers import WrappedHandlers


class _Edge:
    """What every wrapped handler shares: the drain and the default deadline (seconds)."""

    def __init__(self, drain: Drain, default_deadline_s: float | None) -> None:
        self.drain = drain
        self.default_deadline_s = default_deadline_s

    def deadline(self, context: ServicerContext[Any, Any]) -> asyncio.Timeout | None:
        if self.default_deadline_s is None or context.time_remaining() is not None:
            return None
        # Past it the handler is cancelled (its statement too, so its transaction rolls back), and
        # TimeoutError becomes DEADLINE_EXCEEDED in service.api.errors.
        return asyncio.timeout(self.default_deadline_s)


def _wrap_unary(
    method: str, behavior: Callable[..., Awaitable[Any]], edge: _Edge
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> Any:
        async with EdgeCall(method, context, request, edge.drain):
            if isinstance(request, Undecodable):
                raise request.error()
            deadline = edge.deadline(context)
            if deadline is None:
                return await behavior(request, context)
            async with deadline:
                return await behavior(request, context)

    return handler


def _wrap_server_stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]], edge: _Edge
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with EdgeCall(method, context, request, edge.drain):
            if isinstance(request, Undecodable):
                raise request.error()
            async for response in behavior(request, context):
                yield response

    return handler


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    # Health and reflection are infrastructure: no canonical line, no overhead (the benchmark uses Check
    # as the cost of an RPC that does no work).
    _SKIP_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

    def __init__(self, default_deadline_s: float | None = None) -> None:
        self.drain = Drain()
        self._edge = _Edge(self.drain, default_deadline_s)
        self._handlers = WrappedHandlers(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._handlers.get(handler_call_details.method, handler)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        if method.startswith(self._SKIP_PREFIXES):
            return _infrastructure(handler)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self._edge),
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_server_stream(method, handler.unary_stream, self._edge),  # type: ignore[arg-type]
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def _infrastructure(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """Health's unary methods: undecodable bytes are INVALID_ARGUMENT there too, without the edge's
    line (streams, such as Watch and reflection, are left as gRPC serves them)."""
    behavior: Callable[..., Any] | None = handler.unary_unary
    if behavior is None:
        return handler

    async def checked(request: Any, context: ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request.field}: {request.description}")
        return await behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        checked,
        request_deserializer=tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
