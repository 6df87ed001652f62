"""SIGKILL of the server while group commits are in flight, then a restart.

Every usage the server acknowledged is in the ledger exactly once under the id it answered; nothing it did
not acknowledge is half-applied (each record has its debit, each debit its record, each balance is the sum
of its entries); and retrying every call with its key afterwards ends with exactly one record per call.
"""

from __future__ import annotations

import asyncio
import signal
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

from tests.support.process import ServiceProcess

pytestmark = pytest.mark.slow

EMAIL_NANOS = 675_000
WALLETS = 4
CLIENTS = 32
# Batch items' numbers, apart from the unary calls'.
BATCH_KEYS = 10**7


def _request(n: int) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=f"kill-{n % WALLETS}",
        idempotency_key=f"call-{n}",
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1 + n % 3)),
    )


async def test_sigkill_during_flushes_loses_no_acknowledged_usage_and_half_applies_nothing(
    db_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": db_url,
        "BILLING_HEALTH_PROBE_INTERVAL_S": "0.2",
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
    }
    service = ServiceProcess(env, tmp_path / "service.log")
    acked: dict[int, str] = {}
    sent: set[int] = set()
    try:
        service.start()
        await service.wait_serving()
        async with grpc.aio.insecure_channel(service.target) as channel:
            wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
            for w in range(WALLETS):
                await wallets.CreateWallet(
                    wallet_service_pb2.CreateWalletRequest(
                        company_id=f"kill-{w}", display_name="K", request_id=f"k{w}"
                    )
                )
            stub = usage_service_pb2_grpc.UsageServiceStub(channel)
            counter = iter(range(10**6))

            async def client() -> None:
                while True:
                    n = next(counter)
                    try:
                        if n % 5 == 0:  # some batch calls among the unary ones
                            keys = [BATCH_KEYS + n * 100 + i for i in range(20)]
                            items = [_request(k) for k in keys]
                            sent.update(keys)
                            batch = await stub.RecordUsageBatch(
                                usage_service_pb2.RecordUsageBatchRequest(items=items), timeout=10
                            )
                            for k, result in zip(keys, batch.results, strict=True):
                                acked[k] = result.recorded.usage_record.id
                        else:
                            sent.add(n)
                            reply = await stub.RecordUsage(_request(n), timeout=10)
                            acked[n] = reply.usage_record.id
                    except grpc.aio.AioRpcError:
                        return  # the server is gone

            tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
            while len(acked) < 300:  # noqa: ASYNC110 - acked fills from the clients
                await asyncio.sleep(0.01)
            service.signal(signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        assert await service.wait_exit() == -signal.SIGKILL
    finally:
        service.kill_quietly()

    conn = await asyncpg.connect(db_url)
    try:
        stored = {
            r["idempotency_key"]: str(r["usage_record_id"])
            for r in await conn.fetch("select * from usage_records")
        }
        for n, record_id in acked.items():
            assert stored[f"call-{n}"] == record_id
        unpaired = await conn.fetchval(
            """
            select count(*) from usage_records u
             full join (select * from ledger_entries where entry_type = 'usage_debit') e
               on e.usage_record_id = u.usage_record_id and e.company_id = u.company_id
              and e.sequence = u.ledger_sequence and e.amount_nanos = -u.amount_nanos
             where u.usage_record_id is null or e.usage_record_id is null
            """
        )
        assert unpaired == 0
    finally:
        await conn.close()

    # Restart: every call retried with its key; the acknowledged ones come back as replays of their record.
    restarted = ServiceProcess(env, tmp_path / "restarted.log")
    try:
        restarted.start()
        await restarted.wait_serving()
        async with grpc.aio.insecure_channel(restarted.target) as channel:
            stub = usage_service_pb2_grpc.UsageServiceStub(channel)
            replies = await asyncio.gather(*(stub.RecordUsage(_request(n), timeout=30) for n in sorted(sent)))
        for n, reply in zip(sorted(sent), replies, strict=True):
            if n in acked:
                assert reply.replayed and reply.usage_record.id == acked[n]
        restarted.signal(signal.SIGTERM)
        assert await restarted.wait_exit() == 0
    finally:
        restarted.kill_quietly()

    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("select count(*) from usage_records") == len(sent)
        for w in range(WALLETS):
            expected = -sum((1 + n % 3) * EMAIL_NANOS for n in sent if n % WALLETS == w)
            assert (
                await conn.fetchval("select balance_nanos from wallets where company_id = $1", f"kill-{w}")
                == expected
            )
    finally:
        await conn.close()
