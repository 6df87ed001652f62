"""From the outbox to delivery rows: one row per (endpoint, event) that the endpoint subscribes to.

The fan-out follows the all-companies stream of `service.app.events` (its cursor never skips a
committed event and keeps each company's events in order) with one cursor for the whole deployment,
kept in `webhook_fanout`. The replica holding that row's lock fans out; the others skip it (SKIP
LOCKED) and only deliver. Rows and the cursor's advance commit together, so every event is fanned out
exactly once. An endpoint receives the events written after it was registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.app.events import AllCursor, parse_cursor, read_all_events

DELIVERY_CHANNEL = "webhook_deliveries"

_LOCK_SQL = "select cursor from webhook_fanout where id = 1 for update skip locked"
_ENDPOINTS_SQL = """
    select endpoint_id, event_types, company_filter, created_at
      from webhook_endpoints where disabled_at is null
"""
_INSERT_SQL = """
    insert into webhook_deliveries (company_id, endpoint_id, event_id, event_sequence, give_up_at)
    select t.company_id, t.endpoint_id, t.event_id, t.event_sequence, now() + make_interval(secs => $5)
      from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
           as t(company_id, endpoint_id, event_id, event_sequence)
        on conflict do nothing
"""
_ADVANCE_SQL = "update webhook_fanout set cursor = $1 where id = 1"
_NOTIFY_SQL = "select pg_notify('webhook_deliveries', endpoint_id) from unnest($1::text[]) as e(endpoint_id)"


@dataclass(frozen=True)
class FanoutResult:
    deliveries: int  # rows written
    endpoints: frozenset[str]  # endpoints that got new rows
    held_back: bool  # committed events wait behind an older open transaction: look again soon
    skipped: bool  # another replica holds the fan-out


async def fan_out(pool: asyncpg.Pool, retry_for_s: float, max_rounds: int = 20) -> FanoutResult:
    """Fan out what the outbox has after the cursor (up to `max_rounds` pages)."""
    written = 0
    touched: set[str] = set()
    held_back = False
    async with pool.acquire() as conn, conn.transaction():
        raw = await conn.fetchval(_LOCK_SQL)
        if raw is None:
            return FanoutResult(0, frozenset(), False, True)
        cursor = parse_cursor(raw, None)
        assert isinstance(cursor, AllCursor)
        endpoints = await conn.fetch(_ENDPOINTS_SQL)
        for _ in range(max_rounds):
            events, after, held_back = await read_all_events(pool, cursor)
            companies: list[str] = []
            endpoint_ids: list[str] = []
            event_ids: list[int] = []
            sequences: list[int] = []
            for event in events:
                for endpoint in endpoints:
                    types = endpoint["event_types"]
                    if (
                        (not types or event.event_type in types)
                        and endpoint["company_filter"] in (None, event.company_id)
                        and event.created_at >= endpoint["created_at"]
                    ):
                        companies.append(event.company_id)
                        endpoint_ids.append(endpoint["endpoint_id"])
                        event_ids.append(event.event_id)
                        sequences.append(event.sequence)
            if companies:
                await conn.execute(_INSERT_SQL, companies, endpoint_ids, event_ids, sequences, retry_for_s)
                written += len(companies)
                touched.update(endpoint_ids)
            if after != cursor:
                await conn.execute(_ADVANCE_SQL, after.encode())
            cursor = after
            if not events:
                break
        if touched:
            await conn.execute(_NOTIFY_SQL, sorted(touched))
    return FanoutResult(written, frozenset(touched), held_back, False)
