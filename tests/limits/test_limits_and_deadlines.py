"""Per-caller and per-method limits, the pool's acquire timeout and deadlines, against a real server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import reporting_pb2, wallet_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.caller import caller_id
from service.api.limits import EXPORT, GET_STATEMENT, GET_USAGE_SUMMARY, WATCH_EVENTS
from service.api.server_options import server_options
from service.api.wire.money import money
from service.config import load_config
from service.domain.money import usd
from tests.conftest import Stubs
from tests.limits.conftest import serving
from tests.support.rpc import rich_error
from tests.wallet.conftest import credit, emails, record

WAIT_S = 30.0


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def refused(call: Awaitable[Any]) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value)


async def waiting_on_locks(pool: asyncpg.Pool) -> int:
    """Statements of the server (not of this test) waiting for a lock now."""
    return int(
        await pool.fetchval(
            """
            select count(*) from pg_stat_activity
             where datname = current_database() and application_name = 'consofta-billing'
               and wait_event_type = 'Lock'
            """
        )
    )


async def holding(pool: asyncpg.Pool, sql: str, *args: Any) -> AsyncIterator[None]:
    """An open transaction of the test's own that ran `sql` (to hold a lock) until the block ends."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(sql, *args)
        yield
    finally:
        await tx.rollback()
        await pool.release(conn)


# --- the stream cap ----------------------------------------------------------------------------------


async def test_a_caller_gets_100_event_streams_and_the_next_is_resource_exhausted(db_url: str) -> None:
    async with serving(db_url) as (app, stubs):
        assert app.limits is not None
        limits = app.limits
        assert limits.streams_per_caller == 100  # the default
        company = await stubs.new_company()
        request = wallet_service_pb2.WatchWalletEventsRequest(company_id=company)
        calls = [stubs.wallet.WatchWalletEvents(request) for _ in range(100)]
        try:

            async def all_admitted() -> bool:
                return sum(limits.streams.values()) == 100

            await until(all_admitted, "100 streams to be admitted")
            over = stubs.wallet.WatchWalletEvents(request)
            error = await refused(over.read())
            assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.reason == "TOO_MANY_STREAMS"
            # Closing one makes room for one.
            calls.pop().cancel()

            async def one_left() -> bool:
                return sum(limits.streams.values()) == 99

            await until(one_left, "a stream to be released")
            calls.append(stubs.wallet.WatchWalletEvents(request))
            await until(all_admitted, "the new stream to be admitted")
            # Other RPCs are not counted against the stream cap.
            await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
        finally:
            for call in calls:
                call.cancel()


class _Peer:
    """The one thing caller_id reads from a servicer context."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "caller"),
    [
        ("ipv4:10.0.0.7:53211", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:40000", "ipv6:[::1]"),
        ("unix:/tmp/billing.sock", "unix:/tmp/billing.sock"),
    ],
)
def test_the_caller_is_the_peer_address_without_its_port(peer: str, caller: str) -> None:
    # A second connection from the same host counts against the same cap.
    assert caller_id(_Peer(peer)) == caller  # type: ignore[arg-type]


# --- heavy reads ---------------------------------------------------------------------------------------


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


async def test_heavy_reads_past_their_limit_are_resource_exhausted_and_the_admitted_ones_finish(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with serving(
        db_url, max_concurrent_statements=2, max_concurrent_exports=1, max_concurrent_summaries=1
    ) as (app, stubs):
        assert app.limits is not None
        limits = app.limits
        company = await stubs.new_company()
        await credit(stubs, company, usd(10))
        statement = reporting_pb2.GetStatementRequest(company_id=company, year=2026, month=1, time_zone="UTC")
        summary = reporting_pb2.GetUsageSummaryRequest(
            company_id=company, start_time=_ts(0), end_time=_ts(86400), time_zone="UTC",
            grouping=reporting_pb2.SUMMARY_GROUPING_DAY,
        )  # fmt: skip
        export = reporting_pb2.ExportWalletTransactionsRequest(company_id=company)

        async def running(method: str, count: int) -> bool:
            return limits.running[method] == count

        # The test's own transaction holds the tables those reads need, so the admitted calls stay
        # running (blocked in the database) while the next one arrives.
        async for _ in holding(pool, "lock table ledger_entries, usage_rollups in access exclusive mode"):
            statements = [asyncio.ensure_future(stubs.wallet.GetStatement(statement)) for _ in range(2)]
            summaries = [asyncio.ensure_future(stubs.usage.GetUsageSummary(summary))]
            exports = stubs.wallet.ExportWalletTransactions(export)
            first_chunk = asyncio.ensure_future(exports.read())
            await until(lambda: running(GET_STATEMENT, 2), "two statements to run")
            await until(lambda: running(GET_USAGE_SUMMARY, 1), "a summary to run")
            await until(lambda: running(EXPORT, 1), "an export to run")
            for call in (
                stubs.wallet.GetStatement(statement),
                stubs.usage.GetUsageSummary(summary),
                stubs.wallet.ExportWalletTransactions(export).read(),
            ):
                error = await refused(call)
                assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error.reason == "TOO_MANY_CONCURRENT_CALLS"
        for reply in await asyncio.gather(*statements):
            assert reply.statement.company_id == company
        await asyncio.gather(*summaries, first_chunk)
        exports.cancel()
        for method in (GET_STATEMENT, GET_USAGE_SUMMARY, EXPORT, WATCH_EVENTS):
            assert limits.running.get(method, 0) == 0


# --- the pool and deadlines ----------------------------------------------------------------------------


async def _locked_wallet_calls(
    stubs: Stubs, company: str, count: int, **kwargs: Any
) -> list[asyncio.Future[Any]]:
    return [
        asyncio.ensure_future(
            stubs.usage.RecordUsage(record(company, f"k-{uuid.uuid4().hex}", emails(1)), **kwargs)
        )
        for _ in range(count)
    ]


async def test_an_exhausted_pool_answers_unavailable_after_the_acquire_timeout(
    db_url: str, pool: asyncpg.Pool
) -> None:
    # Two flushers, so that two group commits can each hold one of the pool's two connections.
    limits = {"db_pool_min_size": 2, "db_pool_max_size": 2, "db_acquire_timeout_s": 0.3, "usage_flushers": 2}
    async with serving(db_url, **limits) as (_app, stubs):
        company = await stubs.new_company()
        await credit(stubs, company, usd(10))
        async for _ in holding(pool, "select 1 from wallets where company_id = $1 for update", company):
            # Both pool connections wait for the wallet lock inside RecordUsage.
            blocked = await _locked_wallet_calls(stubs, company, 2)

            async def both_waiting() -> bool:
                return await waiting_on_locks(pool) == 2

            await until(both_waiting, "two debits to wait for the wallet lock")
            started = time.monotonic()
            error = await refused(
                stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
            )
            assert error.code is grpc.StatusCode.UNAVAILABLE
            assert error.reason == "DATABASE_POOL_EXHAUSTED"
            assert time.monotonic() - started < WAIT_S
        # The lock is gone: the waiting debits complete, and the pool serves again.
        for reply in await asyncio.gather(*blocked):
            assert not reply.replayed
        await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))


async def _no_server_statement_waits(pool: asyncpg.Pool) -> None:
    async def none_waiting() -> bool:
        return await waiting_on_locks(pool) == 0

    await until(none_waiting, "the server's statement to be cancelled")


async def _debits(pool: asyncpg.Pool, company: str) -> int:
    """Credits made (CreditWallet takes the wallet lock directly; RecordUsage goes through the group
    commit, which answers a failed batch with its own UNAVAILABLE / USAGE_NOT_RECORDED)."""
    return int(
        await pool.fetchval(
            "select count(*) from ledger_entries where company_id = $1 and entry_type = 'manual_credit'",
            company,
        )
    )


def _credit(company: str, request_id: str) -> wallet_service_pb2.CreditWalletRequest:
    return wallet_service_pb2.CreditWalletRequest(
        company_id=company, amount=money(usd(1)), reason="deadline test", request_id=request_id
    )


async def test_a_statement_past_the_statement_timeout_is_deadline_exceeded(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with serving(db_url, db_statement_timeout_s=0.3) as (_app, stubs):
        company = await stubs.new_company()
        request = _credit(company, "timed-out")
        async for _ in holding(pool, "select 1 from wallets where company_id = $1 for update", company):
            error = await refused(stubs.wallet.CreditWallet(request))
        assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert error.reason == "DEADLINE_EXCEEDED"
        assert await _debits(pool, company) == 0
        # Nothing was committed, so the same key records it now.
        assert not (await stubs.wallet.CreditWallet(request)).replayed


async def test_a_call_without_a_deadline_gets_the_default_one_and_its_statement_is_cancelled(
    db_url: str, pool: asyncpg.Pool
) -> None:
    async with serving(db_url, default_deadline_s=0.3) as (_app, stubs):
        company = await stubs.new_company()
        request = _credit(company, "no-deadline")
        async for _ in holding(pool, "select 1 from wallets where company_id = $1 for update", company):
            error = await refused(stubs.wallet.CreditWallet(request))
            assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert error.reason == "DEADLINE_EXCEEDED"
            # The server cancelled the statement instead of leaving it waiting behind the lock.
            await _no_server_statement_waits(pool)
        assert await _debits(pool, company) == 0
        assert not (await stubs.wallet.CreditWallet(request)).replayed


async def test_a_callers_own_deadline_cancels_the_servers_statement(db_url: str, pool: asyncpg.Pool) -> None:
    async with serving(db_url) as (_app, stubs):
        company = await stubs.new_company()
        request = _credit(company, "own-deadline")
        async for _ in holding(pool, "select 1 from wallets where company_id = $1 for update", company):
            error = await refused(stubs.wallet.CreditWallet(request, timeout=0.3))
            assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
            await _no_server_statement_waits(pool)
        assert await _debits(pool, company) == 0


# --- connection options -------------------------------------------------------------------------------


def test_every_connection_limit_is_an_explicit_server_option() -> None:
    config = load_config(
        {
            "BILLING_GRPC_MAX_CONCURRENT_STREAMS": "64",
            "BILLING_GRPC_KEEPALIVE_TIME_S": "30",
            "BILLING_GRPC_KEEPALIVE_TIMEOUT_S": "5",
            "BILLING_GRPC_MIN_PING_INTERVAL_S": "15",
            "BILLING_GRPC_MAX_CONNECTION_IDLE_S": "120",
            "BILLING_GRPC_MAX_CONNECTION_AGE_S": "600",
            "BILLING_GRPC_MAX_CONNECTION_AGE_GRACE_S": "60",
            "BILLING_GRPC_MAX_RECEIVE_MESSAGE_BYTES": "65536",
        }
    )
    assert dict(server_options(config)) == {
        "grpc.max_concurrent_streams": 64,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.min_ping_interval_without_data_ms": 15_000,
        "grpc.http2.max_ping_strikes": 2,
        "grpc.max_connection_idle_ms": 120_000,
        "grpc.max_connection_age_ms": 600_000,
        "grpc.max_connection_age_grace_ms": 60_000,
        "grpc.max_receive_message_length": 65536,
    }


async def test_a_request_above_the_receive_limit_is_refused_by_the_server(db_url: str) -> None:
    async with serving(db_url, grpc_max_receive_message_bytes=1024) as (_app, stubs):
        error = await refused(
            stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id="x" * 2000))
        )
        assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_connection_past_its_maximum_age_is_closed_and_its_stream_ends_unavailable(
    db_url: str,
) -> None:
    async with serving(db_url, grpc_max_connection_age_s=1.0, grpc_max_connection_age_grace_s=1.0) as (
        _app,
        stubs,
    ):
        company = await stubs.new_company()
        call = stubs.wallet.WatchWalletEvents(wallet_service_pb2.WatchWalletEventsRequest(company_id=company))
        async with asyncio.timeout(WAIT_S):
            error = await refused(call.read())
        # Resumable: the stream's cursor is good on a new connection.
        assert error.code is grpc.StatusCode.UNAVAILABLE
