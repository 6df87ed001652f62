"""The usage batcher on a real Postgres: backpressure, deadlines, a lost connection, shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from service.app.proposed_ids import proposed_ids
from service.app.record_usage import RecordedUsage, RecordUsageCommand, sql_arguments
from service.app.usage_batch_rounds import RECORD_USAGES_SQL
from service.app.usage_batcher import UsageBatcher
from service.app.wallets import create_wallet
from service.domain.errors import UsageNotRecorded, UsageQueueFull
from service.domain.usage_kinds import EmailUsage

COMPANY = "batcher-co"


def cmd(key: str, count: int = 1) -> RecordUsageCommand:
    return RecordUsageCommand(COMPANY, key, EmailUsage(count), None, datetime.now(UTC))


async def _locked(db_url: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    """Another session holding the wallet row lock: flushes wait on it."""
    conn = await asyncpg.connect(db_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("select 1 from wallets where company_id = $1 for update", COMPANY)
    return conn, tx


async def _waiting_on_lock(pool: asyncpg.Pool, count: int) -> list[int]:
    for _ in range(500):
        pids = [
            r["pid"]
            for r in await pool.fetch(
                "select pid from pg_stat_activity"
                " where wait_event_type = 'Lock' and datname = current_database()"
            )
        ]
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError("no flush is waiting on the wallet lock")


@pytest.fixture
async def company(pool: asyncpg.Pool) -> str:
    await create_wallet(pool, COMPANY, "Batcher", "create-batcher")
    return COMPANY


async def test_a_full_queue_refuses_at_once_and_the_queued_calls_complete(
    pool: asyncpg.Pool, db_url: str, company: str
) -> None:
    batcher = UsageBatcher(pool, max_queue=3, max_flushes=1)
    locker, tx = await _locked(db_url)
    first = asyncio.ensure_future(batcher.record(cmd("k0")))
    await _waiting_on_lock(pool, 1)  # the flush took k0 and waits
    queued = [asyncio.ensure_future(batcher.record(cmd(f"k{i}"))) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(UsageQueueFull):
        await batcher.record(cmd("k4"))
    with pytest.raises(UsageQueueFull):  # all or none: a batch that does not fit is refused whole
        batcher.submit([cmd("k5"), cmd("k6")])
    await tx.rollback()
    await locker.close()
    results = await asyncio.gather(first, *queued)
    assert [r.record.idempotency_key for r in results] == ["k0", "k1", "k2", "k3"]
    assert await pool.fetchval("select count(*) from usage_records") == 4
    await batcher.stop(1)


async def test_a_call_whose_deadline_passed_in_the_queue_is_not_started(
    pool: asyncpg.Pool, db_url: str, company: str
) -> None:
    batcher = UsageBatcher(pool, max_flushes=1)
    locker, tx = await _locked(db_url)
    first = asyncio.ensure_future(batcher.record(cmd("k0")))
    await _waiting_on_lock(pool, 1)
    late = asyncio.ensure_future(batcher.record(cmd("late"), timeout_s=0.05))
    await asyncio.sleep(0.2)
    await tx.rollback()
    await locker.close()
    assert isinstance(await first, RecordedUsage)
    with pytest.raises(UsageNotRecorded):
        await late
    assert await pool.fetchval("select count(*) from usage_records where idempotency_key = 'late'") == 0
    await batcher.stop(1)


async def test_a_flush_whose_connection_dies_is_retried_and_applied_once(
    pool: asyncpg.Pool, db_url: str, company: str
) -> None:
    batcher = UsageBatcher(pool, max_flushes=1, retry_backoff_s=0.01)
    locker, tx = await _locked(db_url)
    calls = [asyncio.ensure_future(batcher.record(cmd(f"k{i}", i + 1))) for i in range(5)]
    [pid] = await _waiting_on_lock(pool, 1)
    # The flush's own backend dies while it waits: its transaction is gone, the batch is tried again.
    await locker.execute("select pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.1)
    await tx.rollback()
    await locker.close()
    results = await asyncio.gather(*calls)
    assert all(not r.replayed for r in results)
    assert await pool.fetchval("select count(*) from usage_records") == 5
    assert await pool.fetchval("select balance_nanos from wallets where company_id = $1", COMPANY) == (
        -15 * 675_000
    )
    await batcher.stop(1)


async def test_stop_applies_what_is_queued_and_then_refuses(pool: asyncpg.Pool, company: str) -> None:
    batcher = UsageBatcher(pool, max_flushes=1)
    calls = [asyncio.ensure_future(batcher.record(cmd(f"k{i}"))) for i in range(50)]
    await asyncio.sleep(0)
    await batcher.stop(10)
    assert all(isinstance(r, RecordedUsage) for r in await asyncio.gather(*calls))
    with pytest.raises(UsageNotRecorded):
        await batcher.record(cmd("after"))
    assert await pool.fetchval("select count(*) from usage_records") == 50


@pytest.mark.parametrize("items", [1, 20])
@pytest.mark.parametrize("caller_mode", ["auto", "force_custom_plan"])
async def test_record_usages_leaves_the_callers_plan_cache_mode_as_it_was(
    pool: asyncpg.Pool, company: str, items: int, caller_mode: str
) -> None:
    # It chooses plan modes for its own statements (generic for a small call); a caller's transaction
    # must see its own setting afterwards, whichever way the call went.
    ids = proposed_ids(items)
    rows = [sql_arguments(cmd(f"mode-{caller_mode}-{items}-{n}"), ids[n]) for n in range(items)]
    columns = [list(column) for column in zip(*rows, strict=True)]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"set local plan_cache_mode = {caller_mode}")
        results = await conn.fetch(RECORD_USAGES_SQL, *columns)
        assert [r["outcome"] for r in results] == ["recorded"] * items
        assert await conn.fetchval("select current_setting('plan_cache_mode')") == caller_mode
