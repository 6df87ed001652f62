"""WatchWalletEvents: ordered, resumable by cursor, exactly once across reconnects and restarts."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import wallet_service_pb2, wallet_service_pb2_grpc

from service.api.wire.money import money
from service.app.events import AllCursor, WalletEvent, read_all_events
from service.domain.money import usd
from service.server import BillingServer, start_server
from tests.conftest import Stubs
from tests.support.config import server_config
from tests.support.rpc import rich_error
from tests.wallet.conftest import ARRIVAL_TIMEOUT_S, add_card, credit, emails, record, watch


async def test_a_company_stream_sends_stored_then_new_events_in_order(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1), request_id="c1")
    reader = watch(stubs.wallet, company)
    try:
        # A new wallet is suspended; the first credit reactivates it, then reports the credit.
        first = await reader.take(2)
        assert [(e.sequence, e.type) for e in first] == [(1, "wallet_reactivated"), (2, "manual_credit")]
        await credit(stubs, company, usd(2), request_id="c2")
        (live,) = await reader.take(1)
        assert (live.sequence, live.type, live.company_id) == (3, "manual_credit", company)
        assert json.loads(live.payload_json)["amount_nanos"] == usd(2)
    finally:
        reader.cancel()


async def test_any_event_type_is_carried(stubs: Stubs, pool: asyncpg.Pool) -> None:
    # The recharge issue emits its own types through emit_wallet_event; the stream passes them through.
    company = await stubs.new_company()
    await add_card(pool, company)
    await pool.execute(
        "select emit_wallet_event($1, 'recharge_started', '{\"attempt_id\": \"a-1\"}')", company
    )
    reader = watch(stubs.wallet, company)
    try:
        # Setting the card lifted the suspension of the empty wallet, then the recharge event follows.
        reactivated, event = await reader.take(2)
        assert reactivated.type == "wallet_reactivated"
        assert event.type == "recharge_started"
        assert json.loads(event.payload_json) == {"attempt_id": "a-1"}
    finally:
        reader.cancel()


async def test_reconnecting_with_the_cursor_delivers_every_event_exactly_once(stubs: Stubs) -> None:
    company = await stubs.new_company()
    for i in range(12):
        await credit(stubs, company, usd(1), request_id=f"before-{i}")
    reader = watch(stubs.wallet, company)
    got = await reader.take(5)
    reader.cancel()  # disconnected mid-stream
    for i in range(6):
        await credit(stubs, company, usd(1), request_id=f"while-away-{i}")
    reader = watch(stubs.wallet, company, cursor=got[-1].cursor)
    try:
        got += await reader.take(19 - 5)
        await credit(stubs, company, usd(1), request_id="after")
        got += await reader.take(1)
    finally:
        reader.cancel()
    assert [e.sequence for e in got] == list(range(1, 21))


async def test_a_server_restart_changes_nothing_for_a_resuming_consumer(
    app: BillingServer, stubs: Stubs, db_url: str
) -> None:
    company = await stubs.new_company()
    everyone: list[str] = []
    for i in range(4):
        await credit(stubs, company, usd(1), request_id=f"a-{i}")
    reader = watch(stubs.wallet, company)
    company_got = await reader.take(3)
    all_reader = watch(stubs.wallet, all_companies=True)
    all_got = await all_reader.take(3)
    await app.stop(grace_s=1)
    # The open streams end with UNAVAILABLE, telling the consumers to reconnect with their cursor.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader.take(10)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    all_reader.cancel()

    config = server_config(health_probe_interval_s=0.2)
    restarted = await start_server(config, database_url=db_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            stub = wallet_service_pb2_grpc.WalletServiceStub(channel)
            for i in range(2):
                await stub.CreditWallet(
                    wallet_service_pb2.CreditWalletRequest(
                        company_id=company,
                        amount=money(usd(1)),
                        reason="after restart",
                        request_id=f"b-{i}",
                    )
                )
            reader = watch(stub, company, cursor=company_got[-1].cursor)
            all_reader = watch(stub, cursor=all_got[-1].cursor, all_companies=True)
            try:
                company_got += await reader.take(4 + 2 + 1 - 3)
                all_got += await all_reader.take(4 + 2 + 1 - 3)
            finally:
                reader.cancel()
                all_reader.cancel()
    finally:
        await restarted.stop(grace_s=1)
    assert [e.sequence for e in company_got] == list(range(1, 8))
    everyone = [e.cursor for e in all_got]
    assert len(set(everyone)) == 7
    assert [e.sequence for e in all_got] == list(range(1, 8))


async def test_all_companies_stream_never_skips_a_late_committing_lower_event_id(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    # Event ids are drawn before commit: T1 takes the lower id and commits after T2. A reader that
    # followed event_id would deliver T2's event, move its cursor past T1's, and lose it.
    a, b = await stubs.new_company(), await stubs.new_company()
    reader = watch(stubs.wallet, all_companies=True)
    t1 = await pool.acquire()
    t2 = await pool.acquire()
    try:
        tx1 = t1.transaction()
        await tx1.start()
        low = await t1.fetchval("select event_id from emit_wallet_event($1, 'test_late', '{}')", a)
        async with t2.transaction():
            high = await t2.fetchval("select event_id from emit_wallet_event($1, 'test_early', '{}')", b)
        assert low < high
        # While T1 is open, the committed higher event is held back rather than delivered past T1's.
        events, _cursor, held_back = await read_all_events(pool, AllCursor(0, None, 0))
        assert [e.event_id for e in events] == [] and held_back
        await tx1.commit()
    finally:
        await pool.release(t1)
        await pool.release(t2)
    got = await reader.take(2)
    reader.cancel()
    assert [e.event_id for e in got] == [low, high]
    # Resuming after the first one gives exactly the second.
    resumed = watch(stubs.wallet, cursor=got[0].cursor, all_companies=True)
    try:
        assert [e.event_id for e in await resumed.take(1)] == [high]
    finally:
        resumed.cancel()


async def test_all_companies_stream_keeps_each_company_in_sequence_order(
    pool: asyncpg.Pool, stubs: Stubs
) -> None:
    # T_B gets its transaction id first but emits second (after T_A committed), while an unrelated
    # transaction R, younger than T_B and older than T_A, is still running. Ordering by transaction id
    # alone would deliver the company's sequence 2 before sequence 1.
    company = await stubs.new_company()
    await add_card(pool, company)  # no suspension events in the way
    conns = [await pool.acquire() for _ in range(3)]
    tb, r, ta = conns
    try:
        tx_b, tx_r = tb.transaction(), r.transaction()
        await tx_b.start()
        await tb.fetchval("select pg_current_xact_id()")
        await tx_r.start()
        await r.fetchval("select pg_current_xact_id()")
        async with ta.transaction():
            await ta.execute("select emit_wallet_event($1, 'first', '{}')", company)
        await tb.execute("select emit_wallet_event($1, 'second', '{}')", company)
        await tx_b.commit()
        # Other short transactions on the server (this test's own server has background work) can hold
        # back even the old event for a moment; wait for it, but never see 'first' or 'second' early.
        early: list[WalletEvent] = []
        cursor = AllCursor(0, None, 0)
        for _ in range(100):
            batch, cursor, held_back = await drain(pool, cursor)
            early += batch
            if any(e.company_id == company for e in early):
                break
            await asyncio.sleep(0.02)
        assert [e.event_type for e in early if e.company_id == company] == ["wallet_reactivated"]
        assert held_back
        await tx_r.commit()
    finally:
        for conn in conns:
            await pool.release(conn)
    late, _, _ = await drain(pool, cursor)
    assert [(e.sequence, e.event_type) for e in late if e.company_id == company] == [
        (2, "first"),
        (3, "second"),
    ]


async def drain(pool: asyncpg.Pool, cursor: AllCursor) -> tuple[list[WalletEvent], AllCursor, bool]:
    """Every event deliverable now from the all-companies stream, and whether some are held back."""
    delivered: list[WalletEvent] = []
    while True:
        events, cursor, held_back = await read_all_events(pool, cursor)
        if not events:
            return delivered, cursor, held_back
        delivered += events


async def test_below_minimum_and_suspension_events_are_emitted_with_the_change(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    await pool.execute(
        "update wallets set minimum_balance_nanos = $2 where company_id = $1", company, usd(0, 500_000_000)
    )
    await stubs.usage.RecordUsage(record(company, "u1", emails(1000)))  # $0.675: below the $0.50 minimum
    await stubs.usage.RecordUsage(record(company, "u2", emails(1000)))  # below zero with no card: suspended
    await credit(stubs, company, usd(1))  # back above the floor: reactivated
    reader = watch(stubs.wallet, company)
    try:
        types = [e.type for e in await reader.take(6)]
    finally:
        reader.cancel()
    assert types == [
        "wallet_reactivated",
        "manual_credit",
        "balance_below_minimum",
        "wallet_suspended",
        "wallet_reactivated",
        "manual_credit",
    ]


async def test_bad_watch_requests_name_the_field(stubs: Stubs) -> None:
    company = await stubs.new_company()
    other = await stubs.new_company()
    await credit(stubs, other, usd(1))
    reader = watch(stubs.wallet, other)
    (other_event,) = await reader.take(1)
    reader.cancel()
    all_reader = watch(stubs.wallet, all_companies=True)
    (any_event,) = await all_reader.take(1)
    all_reader.cancel()
    cases = [
        (wallet_service_pb2.WatchWalletEventsRequest(company_id=company, cursor="%%%"), "cursor"),
        (
            wallet_service_pb2.WatchWalletEventsRequest(company_id=company, cursor=other_event.cursor),
            "cursor",
        ),
        (wallet_service_pb2.WatchWalletEventsRequest(company_id=company, cursor=any_event.cursor), "cursor"),
        (
            wallet_service_pb2.WatchWalletEventsRequest(all_companies=True, cursor=other_event.cursor),
            "cursor",
        ),
        (wallet_service_pb2.WatchWalletEventsRequest(company_id=company, all_companies=True), "company_id"),
        (wallet_service_pb2.WatchWalletEventsRequest(), "company_id"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stubs.wallet.WatchWalletEvents(request, timeout=ARRIVAL_TIMEOUT_S):
                pass
        error = rich_error(caught.value)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, (field, error)
        assert field in error.fields, (field, error.fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.wallet.WatchWalletEvents(
            wallet_service_pb2.WatchWalletEventsRequest(company_id="nobody"), timeout=ARRIVAL_TIMEOUT_S
        ):
            pass
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
