"""The server interceptor: every RPC but health and reflection runs inside one `EdgeCall`.

What an `EdgeCall` does (request id and log line, metrics, error mapping, the shutdown drain) lives in
`service.api.edge_call` and the modules it names; here are only the two handler shapes gRPC has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from service.api.drain import Drain
from service.api.edge_call import EdgeCall


def _wrap_unary(
    method: str, behavior: Callable[..., Awaitable[Any]], drain: Drain
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> Any:
        async with EdgeCall(method, context, request, drain):
            return await behavior(request, context)

    return handler


def _wrap_server_stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]], drain: Drain
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with EdgeCall(method, context, request, drain):
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
