"""1,000 concurrent RecordUsage calls from 100 clients over 10 wallets, through the group commit.

The mix: fresh keys, exact repeats (replays), repeats with another body (IDEMPOTENCY_KEY_REUSED), unknown
companies, holds that do not exist, and RecordUsageBatch calls. Every caller must get its own right answer,
the totals must be exact, and the ledger invariants (checked by the db_url fixture) must hold.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import grpc
from consofta.billing.v1 import usage_pb2, usage_service_pb2

from tests.conftest import Stubs
from tests.support.rpc import rich_error, rich_status

EMAIL_NANOS = 675_000
CLIENTS = 100
CALLS_PER_CLIENT = 10
WALLETS = 10


def email(company: str, key: str, count: int, hold_id: str = "") -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count)),
        hold_id=hold_id,
    )


async def test_1000_mixed_concurrent_calls_get_their_own_answers_and_exact_totals(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    companies = [await stubs.new_company() for _ in range(WALLETS)]
    rng = random.Random(12)
    # Keys that several clients send at once: same body (one record, the others replays) ...
    shared = [(companies[i % WALLETS], f"shared-{i}", 1 + i % 4) for i in range(40)]
    # ... and a key that two clients send with different bodies: one wins, the other is told it is reused.
    contested = [(companies[i % WALLETS], f"contested-{i}") for i in range(20)]
    expected_nanos = dict.fromkeys(companies, 0)
    for company, _, count in shared:
        expected_nanos[company] -= count * EMAIL_NANOS
    outcomes: dict[str, list[str]] = {"contested": [], "shared": []}

    async def client(n: int) -> None:
        for i in range(CALLS_PER_CLIENT):
            kind = rng.choice(
                ["fresh", "fresh", "fresh", "shared", "contested", "unknown", "bad_hold", "batch"]
            )
            company = companies[(n + i) % WALLETS]
            if kind == "fresh":
                count = 1 + (n + i) % 5
                reply = await stubs.usage.RecordUsage(email(company, f"fresh-{n}-{i}", count))
                assert not reply.replayed
                assert reply.usage_record.price.billable_units == count
                expected_nanos[company] -= count * EMAIL_NANOS
            elif kind == "shared":
                company, key, count = rng.choice(shared)
                reply = await stubs.usage.RecordUsage(email(company, key, count))
                outcomes["shared"].append(reply.usage_record.id)
            elif kind == "contested":
                company, key = rng.choice(contested)
                count = rng.choice([1, 2])
                try:
                    reply = await stubs.usage.RecordUsage(email(company, key, count))
                    outcomes["contested"].append(f"{company}/{key}/{count}/{reply.usage_record.id}")
                except grpc.aio.AioRpcError as error:
                    assert rich_error(error).reason == "IDEMPOTENCY_KEY_REUSED"
            elif kind == "unknown":
                try:
                    await stubs.usage.RecordUsage(email(f"nobody-{n}", f"u-{n}-{i}", 1))
                    raise AssertionError("an unknown company was debited")
                except grpc.aio.AioRpcError as error:
                    assert rich_error(error).reason == "COMPANY_NOT_FOUND"
            elif kind == "bad_hold":
                try:
                    await stubs.usage.RecordUsage(email(company, f"h-{n}-{i}", 1, hold_id=str(uuid.uuid4())))
                    raise AssertionError("a usage with a missing hold was recorded")
                except grpc.aio.AioRpcError as error:
                    assert rich_error(error).reason == "HOLD_NOT_FOUND"
            else:
                items = [
                    email(company, f"batch-{n}-{i}-0", 2),
                    email(company, f"batch-{n}-{i}-0", 2),  # a replay inside the batch
                    email(company, f"batch-{n}-{i}-0", 3),  # reused inside the batch
                    email(f"nobody-{n}", f"batch-{n}-{i}-1", 1),
                    email(company, f"batch-{n}-{i}-2", 1),
                ]
                batch = await stubs.usage.RecordUsageBatch(
                    usage_service_pb2.RecordUsageBatchRequest(items=items)
                )
                r = batch.results
                assert [x.WhichOneof("result") for x in r] == [
                    "recorded",
                    "recorded",
                    "error",
                    "error",
                    "recorded",
                ]
                assert not r[0].recorded.replayed and r[1].recorded.replayed
                assert r[1].recorded.usage_record.id == r[0].recorded.usage_record.id
                assert rich_status(r[2].error).reason == "IDEMPOTENCY_KEY_REUSED"
                assert rich_status(r[3].error).reason == "COMPANY_NOT_FOUND"
                expected_nanos[company] -= 3 * EMAIL_NANOS

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))

    # Each shared key has exactly one record, whoever sent it first; every sender got that record.
    stored = {
        (r["company_id"], r["idempotency_key"]): (str(r["usage_record_id"]), r["billable_units"])
        for r in await pool.fetch(
            "select company_id, idempotency_key, usage_record_id, billable_units from usage_records"
        )
    }
    shared_ids = {stored[(c, k)][0] for c, k, _ in shared if (c, k) in stored}
    assert set(outcomes["shared"]) <= shared_ids
    for company, key, count in shared:
        if (company, key) not in stored:  # nobody happened to send it
            expected_nanos[company] += count * EMAIL_NANOS
    # A contested key's winners all got the one stored record, with the body that was stored.
    for line in outcomes["contested"]:
        company, key, units, record_id = line.split("/")
        assert stored[(company, key)] == (record_id, int(units))
    for company, key in contested:
        if (company, key) in stored:
            expected_nanos[company] -= stored[(company, key)][1] * EMAIL_NANOS
    balances = {
        r["company_id"]: r["balance_nanos"]
        for r in await pool.fetch("select company_id, balance_nanos from wallets")
    }
    assert balances == expected_nanos
    assert await pool.fetchval("select count(*) from holds where state = 'captured'") == 0
