"""Per-caller and per-method limits, so that no one caller can starve the others.

* Open WatchWalletEvents streams per caller (`caller_id`): past the cap, RESOURCE_EXHAUSTED.
* Heavy reads (statements, exports, usage summaries) running at once, per method and process: past
  the limit, RESOURCE_EXHAUSTED at once instead of queueing for pool connections that RecordUsage needs.

Both are counted in this process only; a caller spread over replicas gets each replica's allowance.
`LimitsInterceptor` applies them after the access interceptor (so a forbidden call is PERMISSION_DENIED,
not counted, and the stream cap counts against the authenticated principal) and inside the edge's
EdgeCall (so a refusal gets its status, log line and metrics).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from consofta.billing.v1 import usage_service_pb2, wallet_service_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc.aio import ServicerContext

from service.api.caller import caller_id
from service.api.wrapped_handlers import WrappedHandlers
from service.config import Config
from service.domain.errors import TooManyConcurrentCalls, TooManyStreams


def method_path(file: FileDescriptor, service: str, method: str) -> str:
    """The gRPC path of a method (`/package.Service/Method`), read from the contract."""
    return f"/{file.services_by_name[service].full_name}/{method}"


WATCH_EVENTS = method_path(wallet_service_pb2.DESCRIPTOR, "WalletService", "WatchWalletEvents")
GET_STATEMENT = method_path(wallet_service_pb2.DESCRIPTOR, "WalletService", "GetStatement")
EXPORT = method_path(wallet_service_pb2.DESCRIPTOR, "WalletService", "ExportWalletTransactions")
GET_USAGE_SUMMARY = method_path(usage_service_pb2.DESCRIPTOR, "UsageService", "GetUsageSummary")


class CallLimits:
    def __init__(self, config: Config) -> None:
        self.streams_per_caller = config.watch_streams_per_caller
        self.method_limits = {
            GET_STATEMENT: config.max_concurrent_statements,
            EXPORT: config.max_concurrent_exports,
            GET_USAGE_SUMMARY: config.max_concurrent_summaries,
        }
        self.running = dict.fromkeys(self.method_limits, 0)
        self.streams: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(self, method: str, context: ServicerContext[Any, Any]) -> Iterator[None]:
        """Count the call against its limits while it runs; raise if one is reached."""
        if method == WATCH_EVENTS:
            with self._stream(caller_id(context)):
                yield
        elif method in self.method_limits:
            with self._concurrent(method):
                yield
        else:
            yield

    @contextlib.contextmanager
    def _stream(self, caller: str) -> Iterator[None]:
        held = self.streams.get(caller, 0)
        if held >= self.streams_per_caller:
            raise TooManyStreams(
                f"at most {self.streams_per_caller} open event streams per caller; close one first",
                metadata={"limit": str(self.streams_per_caller)},
            )
        self.streams[caller] = held + 1
        try:
            yield
        finally:
            left = self.streams[caller] - 1
            if left:
                self.streams[caller] = left
            else:
                del self.streams[caller]

    @contextlib.contextmanager
    def _concurrent(self, method: str) -> Iterator[None]:
        limit = self.method_limits[method]
        if self.running[method] >= limit:
            name = method.rsplit("/", 1)[-1]
            raise TooManyConcurrentCalls(
                f"at most {limit} {name} calls run at once on this server; retry with backoff",
                metadata={"method": name, "limit": str(limit)},
            )
        self.running[method] += 1
        try:
            yield
        finally:
            self.running[method] -= 1


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    """Admits each call of the limited methods through `CallLimits`; other calls pass untouched."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits
        self._methods = {WATCH_EVENTS, *limits.method_limits}
        self._handlers = WrappedHandlers(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method not in self._methods:
            return handler
        return self._handlers.get(method, handler)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        limits = self.limits
        if handler.unary_unary is not None:
            unary: Callable[..., Awaitable[Any]] = handler.unary_unary

            async def unary_unary(request: Any, context: ServicerContext[Any, Any]) -> Any:
                with limits.admit(method, context):
                    return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream: Callable[..., AsyncIterator[Any]] = handler.unary_stream  # type: ignore[assignment]

            async def unary_stream(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                with limits.admit(method, context):
                    async for response in stream(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
