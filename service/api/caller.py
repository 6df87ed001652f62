"""Who is calling, for per-caller limits."""

from __future__ import annotations

from typing import Any

from grpc.aio import ServicerContext

from service.api.auth import current_principal


def caller_id(context: ServicerContext[Any, Any]) -> str:
    """The caller a per-caller limit counts against: the authenticated principal (`principal:<id>`), or,
    with authentication off, the peer's address without its port (`ipv4:10.0.0.7`), so that opening more
    connections does not buy more streams. Call it after authentication (inside the servicer)."""
    principal = current_principal()
    if principal is not None:
        return f"principal:{principal.id}"
    peer = context.peer() or "unknown"
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and address:
        host, _, _port = address.rpartition(":")
        return f"{kind}:{host or address}"
    return peer
