"""Recharge attempts: the row, its provider identity, and leasing it to one process at a time.

An attempt's id is its idempotency key at the provider (``idempotency_key``) and is also set in the
PaymentIntent's metadata (``ATTEMPT_METADATA_KEY``), so every retry, from any process, reuses the key,
and reconciliation can find the charge after the provider has forgotten the key.

Claiming is one short transaction: ``FOR UPDATE SKIP LOCKED`` picks due attempts, and a lease keeps
each one away from other processes while the provider is called, outside any transaction. All times
come from the database clock (``now()``), the one clock every replica shares.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from .engine import Kind
from .transitions import Status

# The metadata key set on every PaymentIntent; reconciliation finds a charge by it.
ATTEMPT_METADATA_KEY = "recharge_attempt_id"


def idempotency_key(attempt_id: uuid.UUID) -> str:
    """The provider idempotency key of an attempt: derived from its id, so every retry reuses it."""
    return f"recharge-{attempt_id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt_id: uuid.UUID
    company_id: str
    kind: Kind
    amount_nanos: int
    status: Status
    provider_customer_id: str
    payment_method_id: str
    card_brand: str
    card_last4: str
    retry_number: int
    call_count: int
    payment_intent_id: str | None
    created_at: dt.datetime
    # The database clock when the attempt was read (claim time).
    now: dt.datetime
    # Which of the company's cards this attempt charges ('primary' or 'backup').
    card_role: str = "primary"
    # A fallback onto the backup card: the primary attempt whose recharge it carries on.
    fallback_of: uuid.UUID | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | asyncpg.Record) -> Attempt:
        return cls(
            attempt_id=row["attempt_id"],
            company_id=row["company_id"],
            kind=Kind(row["kind"]),
            amount_nanos=row["amount_nanos"],
            status=Status(row["status"]),
            provider_customer_id=row["provider_customer_id"],
            payment_method_id=row["payment_method_id"],
            card_brand=row["card_brand"],
            card_last4=row["card_last4"],
            retry_number=row["retry_number"],
            call_count=row["call_count"],
            payment_intent_id=row["payment_intent_id"],
            created_at=row["created_at"],
            now=row["now"],
            card_role=row["card_role"],
            fallback_of=row["fallback_of"],
        )

    @property
    def metadata(self) -> dict[str, str]:
        return {ATTEMPT_METADATA_KEY: str(self.attempt_id), "company_id": self.company_id, "kind": self.kind}

    @property
    def description(self) -> str:
        what = "Pre-load" if self.kind is Kind.PRELOAD else "Auto-recharge"
        return f"Consofta wallet {what.lower()} for {self.company_id}"


# ---- claiming work -------------------------------------------------------------------------------

_CLAIM_SQL = """
    with due as (
        select attempt_id from recharge_attempts
         where status in ('pending', 'processing') and next_attempt_at <= now()
           and (lease_expires_at is null or lease_expires_at <= now())
         order by next_attempt_at
         limit $3
           for update skip locked
    )
    update recharge_attempts a
       set lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), updated_at = now()
      from due
     where a.attempt_id = due.attempt_id
    returning a.*, now() as now
"""


async def claim_due(pool: asyncpg.Pool, owner: str, lease_s: float, limit: int) -> list[Attempt]:
    """Lease up to ``limit`` due attempts to this process.

    SKIP LOCKED lets several processes claim at once without waiting on each other; the lease keeps an
    attempt away from other processes after this short transaction commits, while the provider is
    called. A process that dies leaves a lease that simply expires, and another process takes over.
    """
    rows = await pool.fetch(_CLAIM_SQL, owner, lease_s, limit)
    return [Attempt.from_row(row) for row in rows]


async def next_due_in_s(pool: asyncpg.Pool) -> float | None:
    """Seconds until the next attempt becomes claimable (0 if one already is), or None."""
    value = await pool.fetchval(
        """
        select extract(epoch from min(greatest(next_attempt_at, coalesce(lease_expires_at, next_attempt_at)))
                                  - now())
          from recharge_attempts where status in ('pending', 'processing')
        """
    )
    return None if value is None else max(0.0, float(value))


async def note_call(pool: asyncpg.Pool, attempt_id: uuid.UUID) -> None:
    """Count a provider call before it is made (so backoff grows even if the process dies in it)."""
    await pool.execute(
        "update recharge_attempts set call_count = call_count + 1, updated_at = now() where attempt_id = $1",
        attempt_id,
    )


async def release_lease(pool: asyncpg.Pool, attempt_id: uuid.UUID, owner: str) -> None:
    """Give an attempt back early (shutdown) so another process need not wait for the lease."""
    await pool.execute(
        """
        update recharge_attempts set lease_owner = null, lease_expires_at = null, updated_at = now()
         where attempt_id = $1 and lease_owner = $2
        """,
        attempt_id,
        owner,
    )
