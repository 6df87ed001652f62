"""Opaque page tokens (AIP-158): one format for every List method.

A token is base64url(JSON [version, query digest, position...]). The digest ties it to the query that
issued it (company and filters), so a token replayed against another company or other filters is
refused instead of silently skipping or repeating rows. Tokens are opaque to callers, not secret: they
carry positions in a listing, never data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from service.domain.errors import FieldViolation, InvalidArgument

TOKEN_VERSION = 1
# Positions are bigint sequences and ids in the database; anything larger was not issued by us.
MAX_POSITION = 2**63 - 1
Position = int | str | None


def digest(*parts: object) -> str:
    """A short fingerprint of a query, from the values that define it."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def not_ours() -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", "is not a page token this service issued")])


def encode(query_digest: str, *position: Position) -> str:
    raw = json.dumps([TOKEN_VERSION, query_digest, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query_digest: str, positions: int) -> list[Position]:
    """The `positions` values the token carries, or InvalidArgument naming page_token."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise not_ours() from None
    if not isinstance(data, list) or len(data) != 2 + positions or data[0] != TOKEN_VERSION:
        raise not_ours()
    if data[1] != query_digest:
        raise InvalidArgument(
            [
                FieldViolation(
                    "page_token",
                    "was issued for another company or other filters; keep them the same while paging, "
                    "or start again without a page token",
                )
            ]
        )
    values = data[2:]
    if not all(v is None or (isinstance(v, int | str) and not isinstance(v, bool)) for v in values):
        raise not_ours()
    return values


def positive_int(value: Position) -> int:
    """A position that must be a positive integer (a sequence or an id)."""
    if not isinstance(value, int) or not 1 <= value <= MAX_POSITION:
        raise not_ours()
    return value
