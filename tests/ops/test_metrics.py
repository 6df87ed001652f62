"""Prometheus /metrics from a real server: the counters move with real RPCs, the gauges are live."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, usage_service_pb2, wallet_service_pb2

from service.config import load_config
from service.server import BillingServer, start_server
from tests.conftest import Stubs
from tests.ops.conftest import scrape, value

USAGE = "consofta.billing.v1.UsageService"
WALLET = "consofta.billing.v1.WalletService"


def _email(company: str, key: str, count: int) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count)),
    )


async def test_rpc_and_usage_counters_move_with_real_calls(app: BillingServer, stubs: Stubs) -> None:
    assert app.metrics_port
    before = await scrape(app.metrics_port)
    company = await stubs.new_company()
    await stubs.usage.RecordUsage(_email(company, "e-1", 1000))  # $0.675
    await stubs.usage.RecordUsage(_email(company, "e-1", 1000))  # a replay: no new usage
    await stubs.usage.RecordUsage(
        usage_service_pb2.RecordUsageRequest(
            company_id=company,
            idempotency_key="c-1",
            usage=usage_pb2.Usage(
                call=usage_pb2.CallUsage(
                    direction=usage_pb2.CALL_DIRECTION_INBOUND,
                    number_type=usage_pb2.NUMBER_TYPE_TOLL_FREE,
                    duration_seconds=61,
                )
            ),
        )
    )  # 2 minutes at $0.0220
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.usage.RecordUsage(_email(company, "", 1))
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id="nobody"))
    after = await scrape(app.metrics_port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"grpc_service": USAGE, "grpc_method": "RecordUsage", "grpc_code": "OK"}
    assert moved("grpc_server_handled_total", **ok) == 3
    assert moved("grpc_server_handling_seconds_count", **ok) == 3
    assert moved("grpc_server_handling_seconds_bucket", **ok, le="+Inf") == 3
    assert moved("grpc_server_handled_total", **{**ok, "grpc_code": "INVALID_ARGUMENT"}) == 1
    assert (
        moved(
            "grpc_server_handled_total", grpc_service=WALLET, grpc_method="GetWallet", grpc_code="NOT_FOUND"
        )
        == 1
    )
    assert (
        moved("grpc_server_handled_total", grpc_service=WALLET, grpc_method="CreateWallet", grpc_code="OK")
        == 1
    )
    assert moved("grpc_server_handling_seconds_sum", **ok) > 0

    assert moved("billing_usage_recorded_total", usage_type="email") == 1
    assert moved("billing_usage_recorded_total", usage_type="call") == 1
    assert moved("billing_usage_debited_nanos_total", usage_type="email") == 675_000_000
    assert moved("billing_usage_debited_nanos_total", usage_type="call") == 44_000_000

    # The wallet went below its minimum (0) with its first debit; this database holds only this test's.
    assert value(after, "billing_wallets_below_minimum") == 1


async def test_wallets_below_minimum_follows_the_database(
    app: BillingServer, stubs: Stubs, db_url: str
) -> None:
    assert app.metrics_port
    companies = [await stubs.new_company() for _ in range(3)]
    assert value(await scrape(app.metrics_port), "billing_wallets_below_minimum") == 0
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "update wallets set minimum_balance_nanos = 5000000000 where company_id = any($1)", companies[:2]
        )
    finally:
        await conn.close()
    assert value(await scrape(app.metrics_port), "billing_wallets_below_minimum") == 2


async def test_paused_wallets_and_wallets_awaiting_a_recharge_follow_the_database(
    app: BillingServer, stubs: Stubs, db_url: str
) -> None:
    assert app.metrics_port
    company = await stubs.new_company()
    await stubs.new_company()  # below its minimum too, but with no card and no auto-recharge

    def gauges(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> tuple[float, float]:
        return value(samples, "billing_wallets_awaiting_recharge"), value(
            samples, "billing_wallets_recharge_paused"
        )

    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("update wallets set minimum_balance_nanos = 5000000000")
        assert gauges(await scrape(app.metrics_port)) == (0, 0)
        # Below the minimum with auto-recharge on and a card: the loop should be lifting it.
        await conn.execute(
            "update billing_settings set auto_recharge_enabled = true where company_id = $1", company
        )
        await conn.execute("update wallets set has_card = true where company_id = $1", company)
        assert gauges(await scrape(app.metrics_port)) == (1, 0)
        await conn.execute(
            "update billing_settings set auto_recharge_paused_reason = 'hard_decline', "
            "auto_recharge_paused_at = now() where company_id = $1",
            company,
        )
        assert gauges(await scrape(app.metrics_port)) == (0, 1)
    finally:
        await conn.close()


async def test_pool_gauges_show_connections_in_use_and_callers_waiting(app: BillingServer) -> None:
    assert app.metrics_port
    pool = app.pool
    max_size = pool.get_max_size()
    held = [await pool.acquire() for _ in range(max_size)]
    waiters = [asyncio.create_task(pool.fetchval("select 1")) for _ in range(3)]
    try:
        while pool.waiting < 3:  # noqa: ASYNC110 - a counter, not an event, is what we wait on
            await asyncio.sleep(0.01)
        samples = await scrape(app.metrics_port)
        assert value(samples, "billing_db_pool_connections") == max_size
        assert value(samples, "billing_db_pool_in_use") == max_size
        # The health probe may be queued too, so at least the three callers of this test.
        assert value(samples, "billing_db_pool_waiting") >= 3
    finally:
        for conn in held:
            await pool.release(conn)
        assert await asyncio.gather(*waiters) == [1, 1, 1]
    samples = await scrape(app.metrics_port)
    assert value(samples, "billing_db_pool_waiting") == 0


async def test_recharge_attempts_metric_is_exposed_for_the_recharge_loop(app: BillingServer) -> None:
    from service.metrics import RECHARGE_ATTEMPTS

    assert app.metrics_port
    before = value(await scrape(app.metrics_port), "billing_recharge_attempts_total", outcome="declined")
    RECHARGE_ATTEMPTS.labels(outcome="declined").inc()
    after = value(await scrape(app.metrics_port), "billing_recharge_attempts_total", outcome="declined")
    assert after - before == 1


async def test_twenty_concurrent_scrapes_share_one_connection_and_none_fails(
    app: BillingServer, stubs: Stubs, db_url: str
) -> None:
    assert app.metrics_port
    company = await stubs.new_company()
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("update wallets set minimum_balance_nanos = 1 where company_id = $1", company)
        for _ in range(3):  # a few rounds: connection reuse, not only the first connect
            results = await asyncio.gather(*(scrape(app.metrics_port) for _ in range(20)))
            assert [value(r, "billing_wallets_below_minimum") for r in results] == [1.0] * 20
            assert all(value(r, "billing_metrics_scrape_errors_total") == 0 for r in results)
        connections = await conn.fetchval(
            "select count(*) from pg_stat_activity where application_name = 'consofta-billing-metrics'"
        )
        assert connections == 1
    finally:
        await conn.close()


async def test_metrics_listen_on_their_own_host_not_the_grpc_one(db_url: str) -> None:
    # Two loopback addresses: gRPC on 127.0.0.1, metrics on 127.0.0.2 only.
    config = replace(
        load_config({}), grpc_host="127.0.0.1", grpc_port=0, metrics_host="127.0.0.2", metrics_port=0
    )
    app = await start_server(config, database_url=db_url)
    try:
        assert app.metrics_port
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.2:{app.metrics_port}/metrics") as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{app.metrics_port}/metrics")
    finally:
        await app.stop(grace_s=1)
