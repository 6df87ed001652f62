"""From the outbox to delivery rows: one row per (endpoint, event) that the endpoint subscribes to.

The fan-out follows each company's events by their `sequence`, like a one-company event stream
(`service.app.events`): sequences are assigned under the wallet lock and become visible in order, so
reading `sequence > cursor` never skips one. The cursor of each company is a row of
`webhook_fanout_cursors`. One statement reads the company's next events, writes their delivery rows,
advances the cursor and wakes the endpoints' deliverers: it takes the cursor row's lock first, so two
replicas fanning out the same company take turns (the second reads on from where the first left), and
every event is fanned out exactly once.

What to fan out: the companies named by the outbox's notifications, and, as a safety net (a
notification lost while the LISTEN connection was down), every company whose newest event is past its
cursor (`companies_behind`). Nothing is fanned out while no endpoint is enabled; an endpoint receives
the events written after it was registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

DELIVERY_CHANNEL = "webhook_deliveries"
PAGE_EVENTS = 500

# $1 company, $2 the retry window (s). Locks the company's cursor row first; a concurrent fan-out of
# the same company waits, then reads on from the cursor that one left.
_FAN_OUT_SQL = f"""
    with cursor_row as (
        select sequence from webhook_fanout_cursors where company_id = $1 for update
    ), events as (
        select e.company_id, e.event_id, e.sequence, e.event_type, e.created_at
          from wallet_events e, cursor_row
         where e.company_id = $1 and e.sequence > cursor_row.sequence
         order by e.sequence limit {PAGE_EVENTS}
    ), written as (
        insert into webhook_deliveries (company_id, endpoint_id, event_id, event_sequence, give_up_at)
        select e.company_id, w.endpoint_id, e.event_id, e.sequence, now() + make_interval(secs => $2)
          from events e
          join webhook_endpoints w
            on w.disabled_at is null
           and (cardinality(w.event_types) = 0 or e.event_type = any(w.event_types))
           and (w.company_filter is null or w.company_filter = e.company_id)
           and e.created_at >= w.created_at
            on conflict do nothing
        returning endpoint_id
    ), advanced as (
        update webhook_fanout_cursors set sequence = (select max(sequence) from events)
         where company_id = $1 and exists (select 1 from events)
    ), woken as (
        select pg_notify('{DELIVERY_CHANNEL}', endpoint_id) from (select distinct endpoint_id from written) d
    )
    select (select count(*) from cursor_row) as has_cursor, (select count(*) from events) as events,
           array(select distinct endpoint_id from written) as endpoints,
           (select count(*) from woken) as woken
"""
# Companies whose newest event is past their fan-out cursor (a global reader: the safety net only).
# A company's first cursor starts at 0: only events written after an endpoint's registration match it,
# so its history adds no rows.
_NEW_CURSOR_SQL = "insert into webhook_fanout_cursors (company_id) values ($1) on conflict do nothing"
_BEHIND_SQL = """
    select w.company_id from wallets w
      left join webhook_fanout_cursors c on c.company_id = w.company_id
     where w.last_event_sequence > coalesce(c.sequence, 0)
     limit $1
"""


@dataclass(frozen=True)
class FanoutResult:
    events: int  # events read
    endpoints: frozenset[str]  # endpoints that got new rows


async def fan_out(pool: asyncpg.Pool, company_id: str, retry_for_s: float) -> FanoutResult:
    """Fan out the company's events after its cursor, all of them (page by page)."""
    events = 0
    touched: set[str] = set()
    while True:
        row = await pool.fetchrow(_FAN_OUT_SQL, company_id, retry_for_s)
        assert row is not None
        if not row["has_cursor"]:
            await pool.execute(_NEW_CURSOR_SQL, company_id)
            continue
        events += row["events"]
        touched.update(row["endpoints"])
        if row["events"] < PAGE_EVENTS:
            return FanoutResult(events, frozenset(touched))


async def companies_behind(pool: asyncpg.Pool, limit: int = 10_000) -> list[str]:
    return [r["company_id"] for r in await pool.fetch(_BEHIND_SQL, limit)]
