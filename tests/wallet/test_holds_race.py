"""A capture and a release of one hold, forced to overlap: they serialize, and the loser gets the typed
error (HOLD_ALREADY_CAPTURED or HOLD_RELEASED), never INTERNAL.

The overlap is forced inside this test's own database: a test-only trigger makes the first of the two
wait on an advisory lock that the test holds, at the worst moment (the capture after it has checked
the hold, the release while it updates the hold row). The test starts the second call, waits until
the database shows it waiting or finished, and only then lets the first one go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import wallet_service_pb2

from service.api.wire.money import nanos_of
from service.domain.money import usd
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.wallet.conftest import credit, get_wallet, outbound_call, record

PAUSE_KEY = 914_914
MINUTE_OUTBOUND_NANOS = usd(0, 14_000_000)

# The capture pauses after it has read the hold as active, when it appends its debit.
_PAUSE_CAPTURE = """
    create function test_pause() returns trigger language plpgsql as $$
    begin
        perform pg_advisory_xact_lock_shared(914914);
        return new;
    end $$;
    create trigger test_pause_capture before insert on ledger_entries
       for each row when (new.entry_type = 'usage_debit') execute function test_pause();
"""
# The release pauses while it marks the hold released (the hold row is locked by then).
_PAUSE_RELEASE = """
    create function test_pause() returns trigger language plpgsql as $$
    begin
        perform pg_advisory_xact_lock_shared(914914);
        return new;
    end $$;
    create trigger test_pause_release before update on holds
       for each row when (new.state = 'released') execute function test_pause();
"""


@pytest.fixture
async def gate(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's holding the advisory lock the paused statement waits for."""
    conn = await asyncpg.connect(db_url)
    await conn.execute("select pg_advisory_lock($1)", PAUSE_KEY)
    yield conn
    await conn.close()


async def _waiting(pool: asyncpg.Pool, wait_event: str | None = None) -> int:
    """Backends of this database waiting on a lock (of one kind, when given)."""
    return int(
        await pool.fetchval(
            """
            select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'
               and ($1::text is null or wait_event = $1)
            """,
            wait_event,
        )
    )


async def _until(condition: object, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _held_call(stubs: Stubs, pool: asyncpg.Pool) -> tuple[str, str]:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    held = await stubs.wallet.AuthorizeUsage(
        wallet_service_pb2.AuthorizeUsageRequest(
            company_id=company, request_id="call", usage=outbound_call(600)
        )
    )
    assert held.allowed
    return company, held.hold.id


async def test_a_release_racing_a_capture_waits_and_gets_hold_already_captured(
    stubs: Stubs, pool: asyncpg.Pool, gate: asyncpg.Connection
) -> None:
    company, hold_id = await _held_call(stubs, pool)
    await pool.execute(_PAUSE_CAPTURE)
    capture = asyncio.ensure_future(
        stubs.usage.RecordUsage(record(company, "end", outbound_call(60), hold_id))
    )
    await _until(lambda: _waiting(pool, "advisory"), "the capture to pause after checking the hold")
    release = asyncio.ensure_future(
        stubs.wallet.ReleaseHold(wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=hold_id))
    )

    async def release_blocked_or_done() -> bool:
        return release.done() or await _waiting(pool) >= 2

    await _until(release_blocked_or_done, "the release to wait for the capture (or finish)")
    await gate.execute("select pg_advisory_unlock($1)", PAUSE_KEY)

    recorded = await capture
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await release
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_ALREADY_CAPTURED")
    assert await pool.fetchval("select state from holds where hold_id = $1::uuid", hold_id) == "captured"
    assert nanos_of(recorded.balance_after) == usd(1) - MINUTE_OUTBOUND_NANOS
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.held) == 0


async def test_a_capture_racing_a_release_waits_and_gets_hold_released(
    stubs: Stubs, pool: asyncpg.Pool, gate: asyncpg.Connection
) -> None:
    company, hold_id = await _held_call(stubs, pool)
    await pool.execute(_PAUSE_RELEASE)
    release = asyncio.ensure_future(
        stubs.wallet.ReleaseHold(wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=hold_id))
    )
    await _until(lambda: _waiting(pool, "advisory"), "the release to pause while marking the hold")
    capture = asyncio.ensure_future(
        stubs.usage.RecordUsage(record(company, "end", outbound_call(60), hold_id))
    )

    async def capture_blocked_or_done() -> bool:
        return capture.done() or await _waiting(pool) >= 2

    await _until(capture_blocked_or_done, "the capture to wait for the release (or finish)")
    await gate.execute("select pg_advisory_unlock($1)", PAUSE_KEY)

    released = await release
    assert released.hold.state == wallet_service_pb2.HOLD_STATE_RELEASED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await capture
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED")
    assert await pool.fetchval("select state from holds where hold_id = $1::uuid", hold_id) == "released"
    # Nothing was debited: the usage can be recorded again without the hold.
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(1)
