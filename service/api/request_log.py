"""Request ids and the canonical log line: one line per RPC, written here and nowhere else.

The request id comes from the caller's `x-request-id` metadata or is generated, is bound into
structlog's context for every line logged while the RPC runs, and goes back in trailing metadata.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import structlog
from grpc.aio import ServicerContext

from service.api.auth import log_fields
from service.domain.ids import COMPANY_ID
from service.tracing import trace_id as current_trace_id

log = structlog.get_logger("rpc")

REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID_CHARS = 128
# How much of an invalid company id a line shows: enough to recognize it, never the caller's megabytes.
_INVALID_COMPANY_ID_PREFIX_CHARS = 32
# A server fault is an error line, so that alerts on error lines see it; every other code is info.
_ERROR_CODES = frozenset((grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN))


def request_id_of(context: ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID_CHARS:
            return value
    return uuid.uuid4().hex


def loggable_company_id(value: str) -> str | None:
    """The company id as a log line may carry it: a valid one whole, an invalid one as a short, escaped
    prefix and its length (it has not been validated when the line is written, and may be anything)."""
    if not value:
        return None
    if COMPANY_ID.fullmatch(value):
        return value
    prefix = value[:_INVALID_COMPANY_ID_PREFIX_CHARS].encode("unicode_escape").decode("ascii")
    return f"invalid:{prefix[: 2 * _INVALID_COMPANY_ID_PREFIX_CHARS]}…({len(value)} chars)"


def bind_request_id(context: ServicerContext[Any, Any], request_id: str) -> None:
    """Bind `request_id` to every line logged during the RPC, and send it back to the caller."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))


def write_line(
    method: str, code: grpc.StatusCode, duration_s: float, request_id: str, company_id: str | None
) -> None:
    """Write the RPC's canonical line and unbind its request id."""
    fields: dict[str, Any] = {
        "method": method,
        "code": code.name,
        "duration_ms": round(duration_s * 1000, 3),
        "request_id": request_id,
    }
    if company_id:
        fields["company_id"] = company_id
    # The caller: `principal`, or `auth: off` while authentication is off.
    fields.update(log_fields())
    trace_id = current_trace_id()
    if trace_id is not None:
        fields["trace_id"] = trace_id
    if code in _ERROR_CODES:
        log.error("rpc", **fields)
    else:
        log.info("rpc", **fields)
    structlog.contextvars.unbind_contextvars("request_id")
