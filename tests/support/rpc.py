"""Reading rich gRPC errors (google.rpc.Status details) the way a client would."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    fields: dict[str, str]


def _decoded(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> RichError:
    reason, metadata, fields = "", {}, {}
    if status is not None:
        # types-protobuf types DESCRIPTOR as the upb or the pure-Python descriptor; Is() takes either.
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):  # type: ignore[arg-type]
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):  # type: ignore[arg-type]
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields = {v.field: v.description for v in bad.field_violations}
    return RichError(code, message, reason, metadata, fields)


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    status = None
    if raw is not None:
        status = status_pb2.Status.FromString(raw if isinstance(raw, bytes) else raw.encode())
    return _decoded(error.code(), error.details() or "", status)


def rich_status(status: status_pb2.Status) -> RichError:
    """A google.rpc.Status carried in a message (a RecordUsageBatch slot), decoded like a call's error."""
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    return _decoded(code, status.message, status)
