"""API keys: create (the secret is returned once), list, revoke, and find one by its secret.

A secret is `cbk_` and 43 URL-safe characters (256 random bits): the prefix lets secret scanners
recognise a leaked key. Only its SHA-256 is stored; a fast hash is enough because the secret is random,
not a password, so there is nothing to guess from the digest.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.domain.errors import FieldViolation, InvalidArgument, NotFound
from service.domain.principals import ROLE_NAMES, Grant, Role

SECRET_PREFIX = "cbk_"
SECRET = re.compile(r"cbk_[A-Za-z0-9_-]{43}")
KEY_ID = re.compile(r"key_[a-z2-7]{16}")
MAX_NAME_CHARS = 100
MAX_COMPANIES = 1000
# How stale `last_used_at` may get before a lookup writes it again: a write per call would put a row
# lock on the hot path of every RecordUsage.
LAST_USED_RESOLUTION_S = 60


class KeyNotFound(NotFound):
    reason = "API_KEY_NOT_FOUND"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key {key_id[:40]!r}", metadata={"key_id": key_id[:40]})


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    # None: every company.
    companies: tuple[str, ...] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def grant(self) -> Grant:
        return Grant(self.role, None if self.companies is None else frozenset(self.companies))

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    # Shown once, never stored.
    secret: str


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + base64.b32encode(secrets.token_bytes(10)).decode().lower()


def _key(row: asyncpg.Record) -> ApiKey:
    companies = row["companies"]
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        role=Role(row["role"]),
        companies=None if companies is None else tuple(companies),
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


def key_violations(name: str, role: str, companies: Collection[str] | None) -> list[FieldViolation]:
    """What is wrong with a new key's name, role and companies (each company id is checked by the edge
    that reads it, like every company id)."""
    found = []
    if not name.strip() or len(name) > MAX_NAME_CHARS:
        found.append(FieldViolation("name", f"must be 1 to {MAX_NAME_CHARS} characters"))
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        found.append(FieldViolation("name", "must not contain control characters"))
    if role not in ROLE_NAMES:
        found.append(FieldViolation("role", f"must be one of {', '.join(ROLE_NAMES)}"))
    if companies is not None:
        if not companies or len(companies) > MAX_COMPANIES:
            found.append(FieldViolation("companies", f"must name 1 to {MAX_COMPANIES} companies"))
    return found


_COLUMNS = (
    "key_id, name, role, companies, created_at, created_by, expires_at, last_used_at, revoked_at, revoked_by"
)


async def create_key(
    pool: asyncpg.Pool,
    name: str,
    role: str,
    companies: Collection[str] | None,
    created_by: str,
    expires_at: datetime | None = None,
) -> CreatedKey:
    """A new key; `companies` None binds it to no company (it spans all of them)."""
    violations = key_violations(name, role, companies)
    if violations:
        raise InvalidArgument(violations)
    secret = new_secret()
    row = await pool.fetchrow(
        f"""
        insert into api_keys (key_id, name, role, companies, secret_sha256, created_by, expires_at)
        values ($1, $2, $3, $4, $5, $6, $7)
        returning {_COLUMNS}
        """,
        new_key_id(),
        name,
        role,
        None if companies is None else sorted(set(companies)),
        secret_digest(secret),
        created_by,
        expires_at,
    )
    assert row is not None
    return CreatedKey(_key(row), secret)


async def list_keys(pool: asyncpg.Pool) -> list[ApiKey]:
    found = await pool.fetch(f"select {_COLUMNS} from api_keys order by created_at, key_id")
    return [_key(row) for row in found]


async def revoke_key(pool: asyncpg.Pool, key_id: str, revoked_by: str) -> ApiKey:
    """Revoke a key; revoking it again keeps the first revocation."""
    row = await pool.fetchrow(
        f"""
        update api_keys set revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, $2)
         where key_id = $1
        returning {_COLUMNS}
        """,
        key_id,
        revoked_by,
    )
    if row is None:
        raise KeyNotFound(key_id)
    return _key(row)


async def find_key(pool: asyncpg.Pool, digest: bytes) -> ApiKey | None:
    """The key whose secret has this digest, revoked and expired ones included (the caller decides), and
    its `last_used_at` brought up to date when it is usable and stale, in the same round trip."""
    row = await pool.fetchrow(
        f"""
        with found as (select {_COLUMNS} from api_keys where secret_sha256 = $1),
        touched as (
            update api_keys k set last_used_at = now()
              from found f
             where k.key_id = f.key_id and f.revoked_at is null
               and (f.expires_at is null or f.expires_at > now())
               and (f.last_used_at is null
                    or f.last_used_at < now() - make_interval(secs => {LAST_USED_RESOLUTION_S}))
        )
        select * from found
        """,
        digest,
    )
    return None if row is None else _key(row)
