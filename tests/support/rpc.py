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


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    reason, metadata, fields = "", {}, {}
    if raw is not None:
        status = status_pb2.Status.FromString(raw if isinstance(raw, bytes) else raw.encode())
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
    return RichError(error.code(), error.details() or "", reason, metadata, fields)
