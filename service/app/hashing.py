"""Request fingerprints that tell an idempotent replay from a reused key."""

from __future__ import annotations

import hashlib


def request_hash(*parts: object) -> bytes:
    """SHA-256 over the parts, each tagged with its length so that ("ab", "c") != ("a", "bc")."""
    digest = hashlib.sha256()
    for part in parts:
        text = "" if part is None else str(part)
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.digest()
