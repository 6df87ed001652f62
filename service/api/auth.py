"""Authentication: the caller's credentials -> a `Principal`, and the current call's principal.

Credentials are an API key (`authorization: Bearer cbk_…`) or, under mTLS, the verified client
certificate's identity (a URI SAN such as a SPIFFE id, or a DNS SAN) found in the configured mapping.
A key, when sent, decides alone. Missing credentials and bad ones are both UNAUTHENTICATED; an unknown,
revoked or expired key gets one and the same message, so an old key tells its holder nothing.

Keys are looked up by the SHA-256 of the secret and kept for `KEY_CACHE_TTL_S`: a revocation reaches
every replica within that time, and a busy caller costs one lookup per key and replica per TTL, not one
per call. Expiry is checked on every call against the clock, not the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import structlog
from grpc.aio import ServicerContext

from service.app.api_keys import SECRET, ApiKey, find_key, secret_digest
from service.domain.errors import Unauthenticated, Unavailable
from service.domain.principals import UNAUTHENTICATED_PRINCIPAL_ID, Grant, Principal

log = structlog.get_logger(__name__)

AUTHORIZATION_KEY = "authorization"
# A revoked key stops working on every replica within this many seconds.
KEY_CACHE_TTL_S = 2.0
_MAX_CACHED_KEYS = 10_000

NO_CREDENTIALS = (
    "this call needs credentials: an API key (authorization: Bearer cbk_…) or a mapped client certificate"
)
BAD_KEY = "the API key is not valid"
UNMAPPED_CERTIFICATE = "the client certificate's identity is not mapped to a role"

# The current call's principal, set by the access interceptor before the servicer runs: "off" while
# authentication is off; None before authentication (or when it failed).
_current: ContextVar[Principal | Literal["off"] | None] = ContextVar("billing_principal", default=None)


def set_current_principal(principal: Principal | Literal["off"]) -> None:
    _current.set(principal)


def current_principal() -> Principal | None:
    """The authenticated principal of the call being served; None when auth is off or not yet done."""
    principal = _current.get()
    return principal if isinstance(principal, Principal) else None


def principal_id(context: ServicerContext[Any, Any] | None = None) -> str | None:
    """The id of the principal making the current call (`key:…`, `mtls:…`), or None while
    authentication is off. Valid in a servicer and in anything the servicer calls; `context` is
    accepted so that callers holding one need not know the principal travels in a contextvar."""
    principal = current_principal()
    return None if principal is None else principal.id


def audit_principal_id() -> str:
    """The principal an audit row records: the caller's id, or `anonymous` while auth is off."""
    return principal_id() or UNAUTHENTICATED_PRINCIPAL_ID


def log_fields() -> dict[str, str]:
    """What the canonical log line says of the caller."""
    principal = _current.get()
    if principal == "off":
        return {"auth": "off"}
    if principal is None:
        return {}
    return {"principal": principal.id}


def bearer_token(context: ServicerContext[Any, Any]) -> str | None:
    """The token of `authorization: Bearer <token>`; "" for a header of another form; None for none."""
    values = [v for k, v in context.invocation_metadata() or () if k == AUTHORIZATION_KEY]
    if not values:
        return None
    if len(values) != 1 or not isinstance(values[0], str):
        return ""
    scheme, _, token = values[0].strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def certificate_identities(context: ServicerContext[Any, Any]) -> list[tuple[str, str]]:
    """The verified client certificate's URI and DNS SANs, URIs first; empty without mTLS."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return []
    found = [("uri", v.decode()) for v in auth.get("peer_uri", ())]
    found += [("dns", v.decode()) for v in auth.get("peer_dns", ())]
    return found


class KeyCache:
    """Keys by secret digest for `ttl_s` seconds; one lookup at a time per digest."""

    def __init__(
        self,
        lookup: Callable[[bytes], Awaitable[ApiKey | None]],
        ttl_s: float = KEY_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[bytes, tuple[float, ApiKey | None]] = {}
        self._loading: dict[bytes, asyncio.Future[ApiKey | None]] = {}

    async def get(self, digest: bytes) -> ApiKey | None:
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        loading = self._loading.get(digest)
        if loading is None:
            loading = asyncio.ensure_future(self._load(digest))
            self._loading[digest] = loading
        # A caller that goes away must not cancel the lookup the others wait for.
        return await asyncio.shield(loading)

    async def _load(self, digest: bytes) -> ApiKey | None:
        try:
            key = await self._lookup(digest)
        finally:
            self._loading.pop(digest, None)
        if len(self._entries) >= _MAX_CACHED_KEYS:
            now = self._clock()
            self._entries = {d: e for d, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= _MAX_CACHED_KEYS:  # a flood of made-up keys
                self._entries.clear()
        self._entries[digest] = (self._clock() + self._ttl_s, key)
        return key


class Authenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        identities: Mapping[tuple[str, str], Grant],
        key_cache_ttl_s: float = KEY_CACHE_TTL_S,
    ) -> None:
        self._identities = identities
        self._keys = KeyCache(lambda digest: find_key(pool, digest), key_cache_ttl_s)

    async def authenticate(self, context: ServicerContext[Any, Any]) -> Principal:
        token = bearer_token(context)
        if token is not None:
            return await self._from_key(token)
        identities = certificate_identities(context)
        for identity in identities:
            grant = self._identities.get(identity)
            if grant is not None:
                return Principal(f"mtls:{identity[1]}", grant)
        raise Unauthenticated(UNMAPPED_CERTIFICATE if identities else NO_CREDENTIALS)

    async def _from_key(self, token: str) -> Principal:
        if not SECRET.fullmatch(token):
            raise Unauthenticated(BAD_KEY)
        try:
            key = await self._keys.get(secret_digest(token))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("cannot check an API key", error=type(error).__name__)
            raise Unavailable("cannot check the API key now; retry") from None
        if key is None or not key.usable_at(datetime.now(UTC)):
            raise Unauthenticated(BAD_KEY)
        return Principal(f"key:{key.key_id}", key.grant)
