"""One idempotency mechanism for every mutation (AIP-155): a caller-chosen key and a request fingerprint.

* The fingerprint is canonical and structured: SHA-256 over the request's parts, each tagged with its
  length so that ("ab", "c") != ("a", "bc"). Parts are plain values (text, numbers, enums, times, ids),
  never a repr().
* A key seen before with the same operation and fingerprint is a replay: the stored result is the
  answer. The same key with anything else is IDEMPOTENCY_KEY_REUSED, built by `key_reused` and nowhere
  else. The error names only the caller's own company and key.
* Off the hot path, keys live in `idempotency_keys`. The SQL helper `claim_idempotency_key()` claims a
  key inside the mutation's own transaction, or returns the earlier claim; a concurrent twin waits on the
  claim and then sees it. RecordUsage keeps its own unique key on usage_records, to stay one round trip;
  its mismatches are judged by `check` all the same.
* What a replay returns is a domain value, stored as JSON (`result_json` / `result_of`); the servicer
  encodes it like a fresh result. No protobuf is stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import NoneType, UnionType
from typing import Any, TypeVar

from service.domain.errors import IdempotencyKeyReused

Part = str | int | bool | None | datetime | uuid.UUID | Enum
T = TypeVar("T")

CLAIM_SQL = """
    select claimed, operation, request_hash, result
      from claim_idempotency_key(p_company_id => $1, p_request_id => $2, p_operation => $3,
                                 p_request_hash => $4)
"""
SAVE_RESULT_SQL = """
    update idempotency_keys set result = $3::jsonb where company_id = $1 and request_id = $2
"""


def _text(part: Part) -> str:
    if part is None:
        return ""
    if isinstance(part, Enum):
        return str(part.value)
    if isinstance(part, datetime):
        return part.isoformat()
    return str(part)


def fingerprint(*parts: Part) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        encoded = _text(part).encode("utf-8", "surrogatepass")
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.digest()


@dataclass(frozen=True)
class Request:
    """A mutation under its key: what `check` compares a stored key with."""

    operation: str
    company_id: str
    key: str
    fingerprint: bytes
    # The request field that carries the key, for the error message.
    key_field: str = "request_id"


def key_reused(request: Request, **metadata: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"{request.key_field} {request.key!r} was already used for a different request of company "
        f"{request.company_id!r}; nothing was changed. Use a new {request.key_field} for a new request",
        metadata={"company_id": request.company_id, request.key_field: request.key, **metadata},
    )


def check(request: Request, stored_operation: str, stored_fingerprint: bytes, **metadata: str) -> None:
    """Return when the stored key is this very request (a replay); raise IdempotencyKeyReused if not."""
    if stored_operation != request.operation or bytes(stored_fingerprint) != request.fingerprint:
        raise key_reused(request, **metadata)


# --- stored results ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def result_json(result: Any) -> str:
    """A domain result (a frozen dataclass of plain values) as the JSON a replay reads back."""
    return json.dumps(_plain(result), sort_keys=True)


def _typed(kind: Any, value: Any) -> Any:
    if typing.get_origin(kind) in (UnionType, typing.Union):
        options = [k for k in typing.get_args(kind) if k is not NoneType]
        return None if value is None else _typed(options[0], value)
    if dataclasses.is_dataclass(kind):
        return result_of(kind, value)  # type: ignore[arg-type]
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(value)
    if kind is datetime:
        return datetime.fromisoformat(value)
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if typing.get_origin(kind) is tuple:
        return tuple(value)
    return value


def result_of(kind: type[T], stored: str | Mapping[str, Any]) -> T:
    """The domain result `result_json` stored."""
    data = json.loads(stored) if isinstance(stored, str) else stored
    hints = typing.get_type_hints(kind)
    return kind(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(kind)})  # type: ignore[arg-type]


# --- the key table, for the use cases that run their own transactions ------------------------------------

_FIND_SQL = """
    select operation, request_hash, result from idempotency_keys where company_id = $1 and request_id = $2
"""


@dataclass(frozen=True)
class Seen:
    """An earlier request under the key, checked to be this one: its stored result, if it kept one."""

    result: str | None


def _seen(request: Request, row: Mapping[str, Any]) -> Seen:
    check(request, row["operation"], row["request_hash"])
    result = row["result"]
    return Seen(None if result is None else str(result))


async def find(conn: Any, request: Request) -> Seen | None:
    """The earlier request under this key (outside any transaction: a cheap look before slow work), or
    None when there is none; IdempotencyKeyReused when it was another request."""
    row = await conn.fetchrow(_FIND_SQL, request.company_id, request.key)
    return None if row is None else _seen(request, row)


async def claim(conn: Any, request: Request) -> Seen | None:
    """Claim the key in the caller's transaction: None when this request is the first, else what the
    first one left (the caller returns it as a replay)."""
    row = await conn.fetchrow(
        CLAIM_SQL, request.company_id, request.key, request.operation, request.fingerprint
    )
    assert row is not None
    return None if row["claimed"] else _seen(request, row)


async def save_result(conn: Any, request: Request, result: Any) -> None:
    """Keep the result a replay of the claimed key returns, in the claiming transaction."""
    await conn.execute(SAVE_RESULT_SQL, request.company_id, request.key, result_json(result))
