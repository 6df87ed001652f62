"""From the outbox to delivery rows: one row per (endpoint, event) that the endpoint subscribes to.

The fan-out follows the all-companies stream of `service.app.events` (its cursor never skips a
committed event and keeps each company's events in order) with one cursor for the whole deployment,
kept in `webhook_fanout`. A round reads the events after the stored cursor outside any transaction (a
transaction holding an id while the horizon is read would hold back every event written after it),
then writes their rows and advances the cursor in one transaction, only if the cursor is still the one
it read (compare and set, under the row's lock; a replica that finds it locked or moved skips the
round). So every event is fanned out exactly once. An endpoint receives the events written after it was
registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.app.events import AllCursor, WalletEvent, parse_cursor, read_all_events

DELIVERY_CHANNEL = "webhook_deliveries"

_CURSOR_SQL = "select cursor from webhook_fanout where id = 1"
_LOCK_SQL = "select cursor from webhook_fanout where id = 1 for update skip locked"
_ENDPOINTS_SQL = """
    select endpoint_id, event_types, company_filter, created_at
      from webhook_endpoints where disabled_at is null
"""
# The rows, the cursor's advance and the wake-up of the endpoints' deliverers, in one statement.
_WRITE_SQL = """
    with written as (
        insert into webhook_deliveries (company_id, endpoint_id, event_id, event_sequence, give_up_at)
        select t.company_id, t.endpoint_id, t.event_id, t.event_sequence, now() + make_interval(secs => $5)
          from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
               as t(company_id, endpoint_id, event_id, event_sequence)
            on conflict do nothing
        returning endpoint_id
    ), advanced as (
        update webhook_fanout set cursor = $6 where id = 1
    )
    select pg_notify('webhook_deliveries', endpoint_id) from (select distinct endpoint_id from written) e
"""


@dataclass(frozen=True)
class FanoutResult:
    deliveries: int  # rows written
    endpoints: frozenset[str]  # endpoints that got new rows
    held_back: bool  # committed events wait behind an older open transaction: look again soon
    skipped: bool  # another replica fanned out (or is fanning out) the same events


def _matches(endpoints: list[asyncpg.Record], events: list[WalletEvent]) -> list[tuple[str, str, int, int]]:
    rows = []
    for event in events:
        for endpoint in endpoints:
            types = endpoint["event_types"]
            if (
                (not types or event.event_type in types)
                and endpoint["company_filter"] in (None, event.company_id)
                and event.created_at >= endpoint["created_at"]
            ):
                rows.append((event.company_id, endpoint["endpoint_id"], event.event_id, event.sequence))
    return rows


async def fan_out(pool: asyncpg.Pool, retry_for_s: float, max_rounds: int = 20) -> FanoutResult:
    """Fan out what the outbox has after the cursor (up to `max_rounds` pages)."""
    written = 0
    touched: set[str] = set()
    held_back = False
    raw = await pool.fetchval(_CURSOR_SQL)
    for _ in range(max_rounds):
        cursor = parse_cursor(raw, None)
        assert isinstance(cursor, AllCursor)
        events, after, held_back = await read_all_events(pool, cursor)
        if after == cursor:
            break
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_LOCK_SQL) != raw:
                return FanoutResult(written, frozenset(touched), held_back, True)
            rows = _matches(list(await conn.fetch(_ENDPOINTS_SQL)), events) if events else []
            columns: list[list[object]] = [list(c) for c in zip(*rows, strict=True)] or [[], [], [], []]
            raw = after.encode()
            await conn.execute(_WRITE_SQL, *columns, retry_for_s, raw)
            written += len(rows)
            touched.update(str(endpoint_id) for endpoint_id in columns[1])
        if not events:
            break
    return FanoutResult(written, frozenset(touched), held_back, False)
