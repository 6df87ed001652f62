"""What the async and the sync client share: the default deadline and the call metadata."""

from __future__ import annotations

from typing import TypeAlias

from consofta.billing.client.errors import REQUEST_ID_KEY

DEFAULT_TIMEOUT_S = 5.0
_MAX_REQUEST_ID_CHARS = 128  # the server ignores longer ids and makes its own

Metadata: TypeAlias = tuple[tuple[str, str], ...]


def _usable(request_id: str) -> bool:
    return 0 < len(request_id) <= _MAX_REQUEST_ID_CHARS and request_id.isascii() and request_id.isprintable()


def call_metadata(auth: Metadata, request_id: str | None) -> Metadata:
    """The bearer token plus `x-request-id`. An id that is not usable (empty, too long, not printable
    ASCII) is left out rather than failing the call: it only correlates logs, and the server then makes
    its own."""
    if request_id is None or not _usable(request_id):
        return auth
    return (*auth, (REQUEST_ID_KEY, request_id))
