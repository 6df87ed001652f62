"""Idempotency of SettingsService mutations: the first response per (company, request id) is the answer.

The row is written in the transaction that makes the change, so a change and its stored response
commit together. Callers look a request up twice: once before calling the payment provider (a plain
replay then costs no provider call) and again under the company lock, where the answer is final.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.domain.errors import IdempotencyKeyReused

# A connection, whether opened directly or borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True)
class SeenRequest:
    # None for StartCardSetup, whose response (a client secret) is never stored.
    response: bytes | None


async def find_request(
    conn: Conn | asyncpg.Pool,
    company_id: str,
    request_id: str,
    operation: str,
    request_hash: bytes,
) -> SeenRequest | None:
    """The earlier request under this id, None when there is none, or IdempotencyKeyReused when the
    id was used for a different request."""
    row = await conn.fetchrow(
        """
        select operation, request_hash, response from settings_requests
         where company_id = $1 and request_id = $2
        """,
        company_id,
        request_id,
    )
    if row is None:
        return None
    if row["operation"] != operation or bytes(row["request_hash"]) != request_hash:
        raise IdempotencyKeyReused(
            f"request id {request_id!r} was already used for a different {row['operation']} request "
            f"of company {company_id!r}; choose a new request id for a new request",
            metadata={"request_id": request_id, "company_id": company_id},
        )
    response = row["response"]
    return SeenRequest(None if response is None else bytes(response))


async def save_request(
    conn: Conn,
    company_id: str,
    request_id: str,
    operation: str,
    request_hash: bytes,
    response: bytes | None,
) -> bool:
    """Record the request; False when a concurrent twin recorded it first (nothing is overwritten)."""
    inserted = await conn.fetchval(
        """
        insert into settings_requests (company_id, request_id, operation, request_hash, response)
        values ($1, $2, $3, $4, $5)
        on conflict (company_id, request_id) do nothing
        returning true
        """,
        company_id,
        request_id,
        operation,
        request_hash,
        response,
    )
    return bool(inserted)
