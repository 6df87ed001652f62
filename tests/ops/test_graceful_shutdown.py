"""SIGTERM on a real server process with 20 RecordUsage calls in flight.

The calls are held in flight by a test transaction that locks the company's wallet row: the usage batcher's
flushers wait on it with the calls' usages, and the calls that came later wait in its queue. Each call either
completes or fails with UNAVAILABLE (the server is going away: retry elsewhere with the same key), and
nothing committed is lost: every call that returned OK is in the ledger, and retrying the others with
their idempotency keys ends with exactly one record per call.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.app.record_usage import RecordUsageCommand, record_usage
from service.domain.usage_kinds import EmailUsage
from tests.support.process import ServiceProcess

pytestmark = pytest.mark.slow

CALLS = 20
FLUSHERS = 2
COMPANY = "shutdown-co"


async def _call(
    stub: usage_service_pb2_grpc.UsageServiceAsyncStub, n: int
) -> tuple[int, grpc.StatusCode, str]:
    try:
        reply = await stub.RecordUsage(
            usage_service_pb2.RecordUsageRequest(
                company_id=COMPANY,
                idempotency_key=f"call-{n}",
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=n + 1)),
            ),
            timeout=60,
        )
        return n, grpc.StatusCode.OK, reply.usage_record.id
    except grpc.aio.AioRpcError as error:
        return n, error.code(), ""


async def _backends_waiting_on_a_lock(conn: asyncpg.Connection) -> int:
    # pg_stat_activity is read once per transaction and the caller is inside one: read it afresh.
    await conn.execute("select pg_stat_clear_snapshot()")
    return int(
        await conn.fetchval(
            """
            select count(*) from pg_stat_activity
             where datname = current_database() and application_name = 'consofta-billing'
               and wait_event_type = 'Lock'
            """
        )
    )


async def _health(target: str) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.mark.parametrize("lock_released", ["within_grace", "after_grace"])
async def test_sigterm_with_20_calls_in_flight_loses_nothing(
    db_url: str, tmp_path: Path, lock_released: str
) -> None:
    grace_s = "20" if lock_released == "within_grace" else "1"
    service = ServiceProcess(
        {
            "DATABASE_URL": db_url,
            "BILLING_PAYMENT_PROVIDER": "sandbox",
            "BILLING_ALLOW_SANDBOX": "1",
            "BILLING_DB_POOL_MAX_SIZE": str(CALLS + 4),
            "BILLING_SHUTDOWN_GRACE_S": grace_s,
            "BILLING_HEALTH_PROBE_INTERVAL_S": "0.2",
            "BILLING_USAGE_FLUSHERS": str(FLUSHERS),
        },
        tmp_path / "service.log",
    )
    locker = await asyncpg.connect(db_url)
    try:
        service.start()
        await service.wait_serving()
        async with grpc.aio.insecure_channel(service.target) as channel:
            await wallet_service_pb2_grpc.WalletServiceStub(channel).CreateWallet(
                wallet_service_pb2.CreateWalletRequest(company_id=COMPANY, display_name="S", request_id="s")
            )
            stub = usage_service_pb2_grpc.UsageServiceStub(channel)
            lock = locker.transaction()
            await lock.start()
            await locker.execute("select 1 from wallets where company_id = $1 for update", COMPANY)
            calls = [asyncio.create_task(_call(stub, n)) for n in range(CALLS)]
            # Both flushers (BILLING_USAGE_FLUSHERS) wait on the lock: every call is inside the server,
            # either in a flush or queued behind one.
            while await _backends_waiting_on_a_lock(locker) < FLUSHERS:
                assert not any(call.done() for call in calls), service.log_path.read_text()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not any(call.done() for call in calls), service.log_path.read_text()

            service.signal(signal.SIGTERM)
            # Health goes NOT_SERVING first, and new calls are refused with UNAVAILABLE.
            while (status := await _health(service.target)) == "SERVING":  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert status == "NOT_SERVING"
            assert (await _call(stub, 1000))[1] == grpc.StatusCode.UNAVAILABLE

            if lock_released == "within_grace":
                await lock.rollback()
                results = await asyncio.gather(*calls)
            else:
                results = await asyncio.gather(*calls)  # the grace period ends with the lock still held
                await lock.rollback()
            assert await service.wait_exit() == 0
    finally:
        service.kill_quietly()
        if not locker.is_closed():
            await locker.close()

    codes = {code for _, code, _ in results}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, service.log_path.read_text()
    if lock_released == "within_grace":
        assert codes == {grpc.StatusCode.OK}  # everything in flight finished within the grace period
    else:
        assert grpc.StatusCode.UNAVAILABLE in codes

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        stored = {
            row["idempotency_key"]: str(row["usage_record_id"])
            for row in await pool.fetch("select idempotency_key, usage_record_id from usage_records")
        }
        # Every call that returned OK is in the database, under the id the caller was given.
        for n, code, record_id in results:
            if code == grpc.StatusCode.OK:
                assert stored[f"call-{n}"] == record_id
        # The callers that got UNAVAILABLE retry with the same key: each call ends up recorded exactly once.
        now = datetime.now(UTC)
        for n, code, _ in results:
            if code != grpc.StatusCode.OK:
                await record_usage(
                    pool, RecordUsageCommand(COMPANY, f"call-{n}", EmailUsage(n + 1), None, now)
                )
        assert await pool.fetchval("select count(*) from usage_records") == CALLS
        emails = sum(range(1, CALLS + 1))
        assert await pool.fetchval("select balance_nanos from wallets where company_id = $1", COMPANY) == (
            -emails * 675_000
        )
    finally:
        await pool.close()
    log_text = service.log_path.read_text()
    assert log_text.index('"shutting down"') < log_text.index('"stopped"')
