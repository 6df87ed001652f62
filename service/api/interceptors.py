"""Server interceptor: request ids, the canonical log line per RPC, and domain-error mapping.

One line per RPC (method, status code, company, duration, request id) is written here and nowhere
else. The request id comes from the caller's `x-request-id` metadata or is generated, is bound into
structlog's context for every line logged while the RPC runs, and goes back in trailing metadata.
"""

from __future__ import annotations

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
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))

    async def fail(self, error: BaseException) -> None:
        """Abort the RPC for `error`; always raises."""
        if isinstance(error, BillingError):
            code, message, details = rich_status(error)
            self.code = code
            await self.context.abort(
                code,
                message,
                trailing_metadata=((REQUEST_ID_KEY, self.request_id), (GRPC_DETAILS_KEY, details)),
            )
        self.code = grpc.StatusCode.INTERNAL
        log.exception("unhandled error", method=self.method)
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


def _wrap_unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> Any:
        call = _Call(method, context, request)
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            call.aborted()
            raise
        except BillingError as error:
            await call.fail(error)
        except Exception as error:
            await call.fail(error)
        finally:
            call.finish()

    return handler


def _wrap_server_stream(
    method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = _Call(method, context, request)
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            call.aborted()
            raise
        except BillingError as error:
            await call.fail(error)
        except Exception as error:
            await call.fail(error)
        finally:
            call.finish()

    return handler


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    # Health and reflection are infrastructure: no canonical line, no overhead (the benchmark uses Check
    # as the cost of an RPC that does no work).
    _SKIP_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

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
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_server_stream(method, handler.unary_stream),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
