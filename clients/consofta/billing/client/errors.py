"""Typed exceptions decoded from the service's rich errors (google.rpc.Status in grpc-status-details-bin).

Callers catch a type (`except IdempotencyKeyReused`) instead of comparing status codes. Every exception
keeps the gRPC code, the server's message, the `ErrorInfo` reason and metadata, the `BadRequest` field
violations and the server's request id, so a log line can name all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as the server named it (e.g. `usage.email.count`)."""

    field: str
    description: str


class BillingError(Exception):
    """Base of every error a call through the client raises for a failed RPC."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.request_id = request_id
        # How many attempts the client made before giving up with this error.
        self.attempts = attempts


class InvalidArgument(BillingError):
    """The request is malformed; `field_violations` names every bad field. Never retried."""

    @property
    def field(self) -> str | None:
        """The first bad field, for the common case of a single violation."""
        return self.field_violations[0].field if self.field_violations else None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(v.field for v in self.field_violations)


class NotFound(BillingError):
    """The company (or other resource) does not exist; `reason` is e.g. COMPANY_NOT_FOUND."""


class AlreadyExists(BillingError):
    """The resource exists already (e.g. COMPANY_EXISTS under another request id)."""


class IdempotencyKeyReused(AlreadyExists):
    """The idempotency key was used before for a different request; the server changed nothing."""


class FailedPrecondition(BillingError):
    """The state must change before this call can succeed (e.g. INSUFFICIENT_FUNDS, NO_RATE_CARD)."""


class Aborted(BillingError):
    """A conflict; the client retried it and gave up after its last attempt."""


class Unavailable(BillingError):
    """The service could not be reached, even after the client's retries."""


class DeadlineExceeded(BillingError):
    """No answer within the deadline, even after the client's retries. The call may have happened:
    repeat it with the same idempotency key to find out without a second debit."""


class Unauthenticated(BillingError):
    """The bearer token is missing or not valid."""


class PermissionDenied(BillingError):
    """The caller may not do this."""


class ResourceExhausted(BillingError):
    """A limit was reached (rate limit, message size)."""


class Internal(BillingError):
    """A bug or an unexpected failure on the server; `request_id` finds its log line."""


class Cancelled(BillingError):
    """The call was cancelled before it finished."""


_BY_CODE: dict[grpc.StatusCode, type[BillingError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
    grpc.StatusCode.CANCELLED: Cancelled,
}

# Reasons that deserve their own type because callers branch on them.
_BY_REASON: dict[str, type[BillingError]] = {
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
}


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value
    return None


def decode_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Sequence[tuple[str, str | bytes]] | None,
    *,
    attempts: int = 1,
) -> BillingError:
    """The typed exception for a failed RPC, from its code, message and trailing metadata."""
    reason, domain = "", ""
    info_metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    raw = _metadata_value(trailing_metadata, DETAILS_KEY)
    if isinstance(raw, bytes):
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except Exception:  # a malformed details blob must not hide the status code itself
            status = status_pb2.Status()
        if status.message:
            message = status.message
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            # Unpack checks the type URL and returns False for another detail type.
            if detail.Unpack(info):
                reason, domain, info_metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Unpack(bad):
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    request_id = _metadata_value(trailing_metadata, REQUEST_ID_KEY)
    kind = _BY_REASON.get(reason) or _BY_CODE.get(code, BillingError)
    return kind(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=info_metadata,
        field_violations=violations,
        request_id=request_id if isinstance(request_id, str) else None,
        attempts=attempts,
    )


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The code of a failed call, from the blocking or the grpc.aio channel alike (so that one retry loop,
    written once, serves both clients); an RpcError that is no call, e.g. an interceptor's, has UNKNOWN."""
    if isinstance(error, grpc.aio.AioRpcError | grpc.Call):
        return error.code()
    return grpc.StatusCode.UNKNOWN


def from_rpc_error(error: grpc.RpcError, *, attempts: int = 1) -> BillingError:
    """Decode a grpc.RpcError (sync) or grpc.aio.AioRpcError (async) into a BillingError."""
    if isinstance(error, grpc.aio.AioRpcError):
        code, details, trailing = error.code(), error.details(), error.trailing_metadata()
        pairs = [(k, v) for k, v in (trailing or ())]
    elif isinstance(error, grpc.Call):
        code, details = error.code(), error.details()
        pairs = [(k, v) for k, v in (error.trailing_metadata() or ())]
    else:  # an RpcError that is not a call, e.g. raised by an interceptor
        return BillingError(grpc.StatusCode.UNKNOWN, str(error), attempts=attempts)
    return decode_status(code, details or "", pairs, attempts=attempts)
