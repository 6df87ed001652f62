"""The server interceptor: every RPC but health and reflection runs inside one `EdgeCall`.

What an `EdgeCall` does (request id and log line, metrics, error mapping, the shutdown drain) lives in
`service.api.edge_call` and the modules it names; here are only the two handler shapes gRPC has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from service.api.decoding import Undecodable, tolerant
from service.api.drain import Drain
from service.api.edge_call import EdgeCall


def _wrap_unary(
    method: str, behavior: Callable[..., Awaitable[Any]], drain: Drain
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> Any:
        async with EdgeCall(method, context, request, drain):
            if isinstance(request, Undecodable):
                raise request.error()
            return await behavior(request, context)

    return handler


def _wrap_server_stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]], drain: Drain
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with EdgeCall(method, context, request, drain):
            if isinstance(request, Undecodable):
                raise request.error()
            async for response in behavior(request, context):
                yield response

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
        if handler is None:
            return handler
        if method.startswith(self._SKIP_PREFIXES):
            return _infrastructure(handler)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self.drain),
                request_deserializer=tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_server_stream(method, handler.unary_stream, self.drain),  # type: ignore[arg-type]
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
