"""The one place where errors become gRPC statuses (AIP-193).

A BillingError carries a google.rpc.ErrorInfo (reason, domain, metadata); an InvalidArgument also carries a
google.rpc.BadRequest listing every field violation. Clients decode them from `grpc-status-details-bin`.
A database that cannot be reached is UNAVAILABLE and a serialization failure ABORTED (both retried by
clients under the same key; `service/db/connectivity.py` tells them apart). Any other exception is a
fault of ours: it is logged once, as one line with its traceback and the request id, and the caller gets
INTERNAL with the request id to quote, never the exception's text.
"""

from __future__ import annotations

import asyncpg
import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from service.db import connectivity
from service.db.pool import AcquireTimeout
from service.domain.errors import (
    Aborted,
    AlreadyExists,
    ApprovalRequired,
    BillingError,
    DatabaseUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PoolExhausted,
    ResourceExhausted,
    TransactionConflict,
    Unauthenticated,
    Unavailable,
)

log = structlog.get_logger("rpc")

ERROR_DOMAIN = "billing.consofta.com"
GRPC_DETAILS_KEY = "grpc-status-details-bin"

_CODES: list[tuple[type[BillingError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Aborted, grpc.StatusCode.ABORTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ApprovalRequired, grpc.StatusCode.PERMISSION_DENIED),
]


def status_code_of(error: BillingError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def rich_status(error: BillingError) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, message, serialized google.rpc.Status) for an error."""
    code, status = status_message(error)
    return code, error.message, status.SerializeToString()


def status_message(error: BillingError) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The google.rpc.Status an error is sent as: in the trailers of a failed call, or in the slot of a
    batch item."""
    code = status_code_of(error)
    details = [
        _packed(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
        )
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    return code, status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)


def status_of(error: Exception, method: str, request_id: str) -> tuple[grpc.StatusCode, str, bytes | None]:
    """(code, message, serialized google.rpc.Status or None) for an RPC that raised `error`."""
    if isinstance(error, BillingError):
        return rich_status(error)
    # A statement the database cancelled (statement_timeout) or a call past the server's default
    # deadline: the work was rolled back, and a retry may succeed. Never INTERNAL.
    if isinstance(error, AcquireTimeout):
        return rich_status(PoolExhausted(str(error)))
    if isinstance(error, asyncpg.QueryCanceledError):
        return rich_status(DeadlineExceeded("the database cancelled the statement at its time limit"))
    if isinstance(error, TimeoutError):
        return rich_status(DeadlineExceeded("the call ran past its deadline"))
    if connectivity.is_unreachable(error):
        log.warning("database unavailable", method=method, error=f"{type(error).__name__}: {error}")
        return rich_status(DatabaseUnavailable())
    if connectivity.is_conflict(error):
        log.info("transaction conflict", method=method, sqlstate=getattr(error, "sqlstate", None))
        return rich_status(TransactionConflict())
    log.exception("unhandled error", method=method, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", None
