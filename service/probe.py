"""`consofta-billing health`: a grpc.health.v1 Check against the running server, for HEALTHCHECK.

Kept apart from the server's modules so the probe starts fast: it imports grpc and nothing else of ours.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Addresses a server binds to that a client cannot dial: probe loopback instead.
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


def probe_target(grpc_host: str, grpc_port: int) -> str:
    host = "127.0.0.1" if grpc_host in _ANY_ADDRESS else grpc_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{grpc_port}"


def check(target: str, service: str = "", timeout_s: float = 3.0) -> str:
    """The serving status name (SERVING, NOT_SERVING...), or the gRPC error code name if the call failed."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            return code.name if code is not None else "UNKNOWN"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
