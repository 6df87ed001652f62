"""The `Consofta-Signature` header, in Stripe's scheme, so receivers can reuse its verification code.

    Consofta-Signature: t=1767225600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

`v1` is the hex HMAC-SHA256 of `f"{t}.{body}"` under the endpoint's signing secret (the whole
`whsec_...` string, as Stripe's libraries use it). During a rotation a header may carry several `v1`
values; a receiver accepts the request when any matches and `t` is within its tolerance (300 s).
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Consofta-Signature"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


def verify(header: str, body: bytes, secret: str, tolerance_s: int = DEFAULT_TOLERANCE_S) -> bool:
    """What a receiver does: the reference check for the README's snippet and the tests."""
    pairs = [item.split("=", 1) for item in header.split(",") if "=" in item]
    stamps = [value for key, value in pairs if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = signature(secret, t, body)
    return any(hmac.compare_digest(expected, value) for key, value in pairs if key == "v1")
