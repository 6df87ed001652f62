"""Who is calling, for per-caller limits."""

from __future__ import annotations

from typing import Any

from grpc.aio import ServicerContext

from service.api.auth import principal_id


def caller_id(context: ServicerContext[Any, Any]) -> str:
    """The caller a per-caller limit counts against: the authenticated principal (`key:…`, `mtls:…`).

    Without authentication this is the peer's address without its port (`ipv4:10.0.0.7`), so that opening
    more connections does not buy more streams.
    """
    principal = principal_id(context)
    if principal is not None:
        return principal
    peer = context.peer() or "unknown"
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and address:
        host, _, _port = address.rpartition(":")
        return f"{kind}:{host or address}"
    return peer
