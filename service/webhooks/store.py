"""The deliverer's SQL: claim due deliveries of one endpoint, and record each attempt's outcome.

Ordering per company: a delivery is claimable only when no earlier event of the same company is still
pending for the same endpoint (in flight, or waiting for its retry). So an endpoint sees a company's
events in sequence order, each one after the previous succeeded or failed for good (72 h by default).
Other companies, and other endpoints, are not held up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_CLAIM_SQL = """
    with due as (
        select d.company_id, d.delivery_id
          from webhook_deliveries d
         where d.endpoint_id = $1 and d.state = 'pending' and d.next_attempt_at <= now()
           and (d.lease_until is null or d.lease_until < now())
           and not exists (
               select 1 from webhook_deliveries p
                where p.endpoint_id = d.endpoint_id and p.company_id = d.company_id
                  and p.state = 'pending' and p.event_sequence < d.event_sequence)
         order by d.next_attempt_at, d.delivery_id
         limit $2
           for update skip locked
    )
    , claimed as (
        update webhook_deliveries w
           set lease_until = now() + make_interval(secs => $3), leased_by = $4, attempts = w.attempts + 1
          from due
         where w.company_id = due.company_id and w.delivery_id = due.delivery_id
        returning w.company_id, w.delivery_id, w.event_id, w.attempts, w.give_up_at
    )
    select c.*, e.sequence, e.event_type, e.payload::text as payload_json, e.created_at
      from claimed c join wallet_events e on e.company_id = c.company_id and e.event_id = c.event_id
"""
_SUCCEEDED_SQL = """
    update webhook_deliveries
       set state = 'succeeded', lease_until = null, leased_by = null, last_status = $3, last_error = null,
           finished_at = now()
     where company_id = $1 and delivery_id = $2 and leased_by = $4 and state = 'pending'
"""
# A retry after `$3` seconds, or 'failed' when that would pass give_up_at.
_FAILED_SQL = """
    update webhook_deliveries
       set state = case when now() + make_interval(secs => $3) > give_up_at then 'failed' else 'pending' end,
           next_attempt_at = now() + make_interval(secs => $3),
           finished_at = case when now() + make_interval(secs => $3) > give_up_at then now() end,
           lease_until = null, leased_by = null, last_status = $4, last_error = $5
     where company_id = $1 and delivery_id = $2 and leased_by = $6 and state = 'pending'
    returning state
"""
# When the endpoint's next claimable delivery is due: only a company's oldest pending one counts (the
# others wait for it), and a leased one counts from its lease's end.
_NEXT_DUE_SQL = """
    select extract(epoch from min(greatest(d.next_attempt_at, coalesce(d.lease_until, d.next_attempt_at)))
                              - now())
      from webhook_deliveries d
     where d.endpoint_id = $1 and d.state = 'pending'
       and not exists (
           select 1 from webhook_deliveries p
            where p.endpoint_id = d.endpoint_id and p.company_id = d.company_id
              and p.state = 'pending' and p.event_sequence < d.event_sequence)
"""


@dataclass(frozen=True)
class Claimed:
    company_id: str
    delivery_id: int
    event_id: int
    attempt: int
    give_up_at: datetime
    event_type: str
    sequence: int
    created_at: datetime
    payload_json: str


async def claim(
    pool: asyncpg.Pool, endpoint_id: str, limit: int, lease_s: float, owner: str
) -> list[Claimed]:
    rows = await pool.fetch(_CLAIM_SQL, endpoint_id, limit, lease_s, owner)
    return [
        Claimed(
            company_id=r["company_id"],
            delivery_id=r["delivery_id"],
            event_id=r["event_id"],
            attempt=r["attempts"],
            give_up_at=r["give_up_at"],
            event_type=r["event_type"],
            sequence=r["sequence"],
            created_at=r["created_at"],
            payload_json=r["payload_json"],
        )
        for r in rows
    ]


async def succeeded(pool: asyncpg.Pool, claimed: Claimed, status: int, owner: str) -> None:
    await pool.execute(_SUCCEEDED_SQL, claimed.company_id, claimed.delivery_id, status, owner)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential in the attempt number, capped, with jitter over its upper half (never zero)."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 40))
    return ceiling * (0.5 + 0.5 * rng.random())


async def failed(
    pool: asyncpg.Pool, claimed: Claimed, retry_in_s: float, status: int | None, error: str, owner: str
) -> str | None:
    """Record a failed attempt; returns the new state ('pending' or 'failed'), None if the lease was lost."""
    return await pool.fetchval(  # type: ignore[no-any-return]
        _FAILED_SQL, claimed.company_id, claimed.delivery_id, retry_in_s, status, error[:500], owner
    )


async def next_due_in_s(pool: asyncpg.Pool, endpoint_id: str) -> float | None:
    value = await pool.fetchval(_NEXT_DUE_SQL, endpoint_id)
    return None if value is None else max(0.0, float(value))
