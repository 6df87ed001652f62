"""The access interceptor: authenticate the caller, check the permission table, remember the principal.

It sits inside the edge interceptor (`server.py` lists it second), so a refused call still gets its
canonical line, its metrics and a rich status: it raises Unauthenticated or PermissionDenied and the edge
maps them like any domain error. Health stays open. Reflection, which the edge does not wrap, is
refused here directly when BILLING_REFLECTION=authenticated.

While authentication is off nothing is checked, and the call is marked so that its canonical line says
`auth=off`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from service.api.auth import Authenticator, set_current_principal
from service.api.errors import status_code_of
from service.api.permissions import HEALTH_PREFIX, REFLECTION_PREFIX, authorize
from service.api.wrapped_handlers import WrappedHandlers
from service.domain.errors import BillingError, PermissionDenied
from service.domain.principals import Principal

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]]


class AccessInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator | None, reflection_needs_auth: bool) -> None:
        """`authenticator` None: authentication is off."""
        self._auth = authenticator
        self._reflection_needs_auth = reflection_needs_auth
        self._handlers = WrappedHandlers(self._wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self._auth is None:
            # The handler runs in this call's task and context, so the mark reaches its log line.
            set_current_principal("off")
            return handler
        if method.startswith(REFLECTION_PREFIX) and not self._reflection_needs_auth:
            return handler
        return self._handlers.get(method, handler)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        assert self._auth is not None
        if method.startswith(REFLECTION_PREFIX):
            return self._reflection(handler)
        return self._checked(method, handler, self._auth)

    def _checked(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any], auth: Authenticator
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def admit(request: Any, context: ServicerContext[Any, Any]) -> None:
            principal = await auth.authenticate(context)
            # Set before the check: a refused call's line still names who was refused.
            set_current_principal(principal)
            authorize(principal, method, request)

        if handler.unary_unary is not None:
            unary: Callable[..., Awaitable[Any]] = handler.unary_unary

            async def unary_unary(request: Any, context: ServicerContext[Any, Any]) -> Any:
                await admit(request, context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream: Callable[..., AsyncIterator[Any]] = handler.unary_stream  # type: ignore[assignment]

            async def unary_stream(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await admit(request, context)
                async for response in stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # A client-streaming RPC carries its companies in many messages, which the table cannot check
        # up front: refused until the table learns how.
        return _refusing(handler, PermissionDenied(f"{method[:120]} is not open to any role"))

    def _reflection(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        assert self._auth is not None and handler.stream_stream is not None
        auth = self._auth
        stream: Callable[..., AsyncIterator[Any]] = handler.stream_stream  # type: ignore[assignment]

        async def stream_stream(requests: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            principal: Principal | None = None
            try:
                principal = await auth.authenticate(context)
            except BillingError as error:
                await context.abort(status_code_of(error), error.message)
            assert principal is not None
            set_current_principal(principal)
            async for response in stream(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _refusing(
    handler: grpc.RpcMethodHandler[Any, Any], error: BillingError
) -> grpc.RpcMethodHandler[Any, Any]:
    async def refuse(_request: Any, context: ServicerContext[Any, Any]) -> Any:
        await context.abort(status_code_of(error), error.message)

    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        refuse, handler.request_deserializer, handler.response_serializer
    )
