"""Three `serve` replicas and two `worker` processes on one database, as behind a load balancer.

Concurrent clients spread RecordUsage over all three replicas onto a few hot wallets, whose debits
keep crossing their minimum, so auto-recharge fires all through the load (in every process: each
replica runs the loop too). One replica is SIGKILLed mid-load and started again. Afterwards: each key
was applied once, each balance is exactly its opening balance plus its credits minus its debits, each
ledger's sequence is continuous, and each recharge attempt has one PaymentIntent and one credit.

The short form runs in the suite; BILLING_TEST_LONG=1 also runs the long one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, usage_service_pb2, usage_service_pb2_grpc

from service.domain.money import usd
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, FakeStripe
from tests.support.process import ServiceProcess

from .conftest import CALL_MINUTE_NANOS, Company, Wallets, charges, wait_until
from .workers import Worker

pytestmark = pytest.mark.slow

REPLICAS = 3
WORKERS = 2
HOT_WALLETS = 4
CALL_MINUTES = 60  # $0.84 a record: a $5.00 recharge lasts about six records
OPENING_NANOS = usd(2)
MINIMUM_NANOS = usd(1)
RECHARGE_NANOS = usd(5)


@dataclass
class Load:
    """Which key went where: every key is retried (same key, next replica) until one replica answers OK."""

    keys: int
    clients: int
    done: set[int] = field(default_factory=set)
    retried: Counter[str] = field(default_factory=Counter)
    next_key: int = 0
    # Keys from `held_from` on wait for `resume`, which the test sets once its victim is dead, and are
    # sent to the victim first: so some calls are sure to meet the dead replica, however fast the first
    # part of the load went and whichever client takes which key.
    held_from: int | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    victim: int = 1

    def company_of(self, key: int, companies: list[Company]) -> str:
        return companies[key % len(companies)].company_id


# How a client sends one usage to a replica. The batch RPC, once it exists, adds a sender here.
Sender = Callable[["usage_service_pb2_grpc.UsageServiceAsyncStub", str, str], Awaitable[None]]


async def send_unary(stub: usage_service_pb2_grpc.UsageServiceAsyncStub, company_id: str, key: str) -> None:
    await stub.RecordUsage(
        usage_service_pb2.RecordUsageRequest(
            company_id=company_id,
            idempotency_key=key,
            usage=usage_pb2.Usage(
                call=usage_pb2.CallUsage(
                    direction=usage_pb2.CALL_DIRECTION_OUTBOUND,
                    number_type=usage_pb2.NUMBER_TYPE_LOCAL,
                    duration_seconds=CALL_MINUTES * 60,
                )
            ),
        ),
        timeout=15,
    )


SENDERS: dict[str, Sender] = {"unary": send_unary}


def _server_env(db_url: str, fake: FakeStripe) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "BILLING_PAYMENT_PROVIDER": "stripe",
        "BILLING_STRIPE_SECRET_KEY": fake.api_key,
        "BILLING_STRIPE_WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
        "BILLING_STRIPE_API_BASE": fake.url,
        "BILLING_RECHARGE_SWEEP_INTERVAL_S": "0.5",
        "BILLING_RECHARGE_LEASE_S": "1.5",
        "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S": "0.1,0.2",
        "BILLING_DB_POOL_MIN_SIZE": "1",
        "BILLING_DB_POOL_MAX_SIZE": "3",
        "BILLING_SHUTDOWN_GRACE_S": "2",
        "BILLING_HEALTH_PROBE_INTERVAL_S": "0.2",
    }


async def _drive(load: Load, companies: list[Company], targets: list[str], sender: Sender) -> None:
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [usage_service_pb2_grpc.UsageServiceStub(c) for c in channels]

    async def client(number: int) -> None:
        while load.next_key < load.keys:
            key = load.next_key
            load.next_key += 1
            if load.held_from is not None and key >= load.held_from:
                await load.resume.wait()
                replica = load.victim
            else:
                replica = (key + number) % len(stubs)
            for _attempt in range(300):
                try:
                    await sender(stubs[replica], load.company_of(key, companies), f"usage-{key}")
                    load.done.add(key)
                    break
                except grpc.aio.AioRpcError as error:
                    # The replica is down or going away; the same key goes to the next one.
                    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), (
                        error
                    )
                    load.retried[error.code().name] += 1
                    replica = (replica + 1) % len(stubs)
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"usage-{key} never succeeded")

    try:
        await asyncio.gather(*(client(n) for n in range(load.clients)))
    finally:
        for channel in channels:
            await channel.close()


def _served_rpcs(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '"event": "rpc"' in line)


async def _run_replicas(
    keys: int, clients: int, sender: Sender, wallets: Wallets, fake: FakeStripe, db_url: str,
    pool: asyncpg.Pool, tmp_path: Path,
) -> None:  # fmt: skip
    companies = [
        await wallets.create(
            f"co-hot-{i}",
            balance_nanos=OPENING_NANOS,
            minimum_nanos=MINIMUM_NANOS,
            recharge_nanos=RECHARGE_NANOS,
        )
        for i in range(HOT_WALLETS)
    ]
    # Charges take a moment at "Stripe", so debits land while recharges are in flight.
    fake.delay_responses(0.05, method="POST", path="/v1/payment_intents", times=None)
    servers = [
        ServiceProcess(_server_env(db_url, fake), tmp_path / f"server-{i}.log") for i in range(REPLICAS)
    ]
    workers = [Worker(db_url, fake, tmp_path / f"worker-{i}.log") for i in range(WORKERS)]
    load = Load(keys, clients, held_from=2 * keys // 3)
    driving: asyncio.Task[None] | None = None
    try:
        for server in servers:
            server.start()
        for worker in workers:
            worker.start()
        for server in servers:
            await server.wait_serving()
        driving = asyncio.create_task(_drive(load, companies, [s.target for s in servers], sender))
        victim = servers[load.victim]

        async def a_third_done() -> bool:
            return len(load.done) >= keys // 3

        await wait_until(a_third_done, timeout_s=120, what="a third of the load")
        served_before_kill = _served_rpcs(victim.log_path)
        victim.signal(signal.SIGKILL)
        await victim.wait_exit()
        load.resume.set()
        await asyncio.sleep(0.5)
        victim.start()  # the same port, as a restarted pod behind the same address
        await victim.wait_serving()
        await asyncio.wait_for(driving, timeout=300)

        async def settled() -> bool:
            # No attempt in flight and no wallet left below its minimum: every recharge has finished.
            row = await pool.fetchrow(
                """
                select (select count(*) from recharge_attempts where status in ('pending', 'processing'))
                           as in_flight,
                       (select count(*) from wallets where balance_nanos < minimum_balance_nanos) as below
                """
            )
            assert row is not None
            return row["in_flight"] == 0 and row["below"] == 0

        await wait_until(settled, timeout_s=60, what="every recharge to settle")
        for server in servers:
            server.signal(signal.SIGTERM)
        for server in servers:
            assert await server.wait_exit() == 0, server.log_path.read_text()[-3000:]
        for worker in workers:
            assert await worker.stop() == 0, worker.log()
    finally:
        if driving is not None and not driving.done():
            # A failure before the load finished: its clients (some held until `resume`) must not
            # outlive the test and call whatever later binds these ports.
            driving.cancel()
            await asyncio.gather(driving, return_exceptions=True)
        for server in servers:
            server.kill_quietly()
        for worker in workers:
            if worker.running:
                worker.kill()

    # The kill landed mid-load on a replica that was serving, and its callers moved on.
    assert served_before_kill > 0
    assert load.retried["UNAVAILABLE"] > 0, load.retried
    assert load.done == set(range(keys))

    # Each key applied once.
    records = await pool.fetch("select company_id, idempotency_key from usage_records")
    assert len(records) == keys
    assert {r["idempotency_key"] for r in records} == {f"usage-{k}" for k in range(keys)}
    debits_per_company = Counter(r["company_id"] for r in records)

    # One PaymentIntent and one credit per attempt, and nothing else charged.
    attempts = await pool.fetch(
        "select attempt_id, company_id, status, payment_intent_id from recharge_attempts"
    )
    assert attempts and all(a["status"] == "succeeded" for a in attempts)
    intents = charges(fake)
    per_attempt = Counter(pi["metadata"]["recharge_attempt_id"] for pi in intents)
    assert per_attempt == Counter({str(a["attempt_id"]): 1 for a in attempts})
    credits = await pool.fetch(
        "select company_id, recharge_attempt_id, reference, amount_nanos from ledger_entries"
        " where entry_type = 'recharge_credit'"
    )
    assert Counter(str(c["recharge_attempt_id"]) for c in credits) == per_attempt
    assert {c["reference"] for c in credits} == {pi["id"] for pi in intents}
    assert len(attempts) >= HOT_WALLETS  # auto-recharge did fire during the load

    # Exact balances: opening + credits - debits, to the nano; and continuous ledgers.
    credited = Counter[str]()
    for credit in credits:
        credited[credit["company_id"]] += credit["amount_nanos"]
    for company in companies:
        expected = (
            OPENING_NANOS
            + credited[company.company_id]
            - debits_per_company[company.company_id] * CALL_MINUTES * CALL_MINUTE_NANOS
        )
        assert await wallets.balance(company.company_id) == expected
        sequences = [
            r["sequence"]
            for r in await pool.fetch(
                "select sequence from ledger_entries where company_id = $1 order by sequence",
                company.company_id,
            )
        ]
        assert sequences == list(range(1, len(sequences) + 1))
        last = await pool.fetchval(
            "select last_sequence from wallets where company_id = $1", company.company_id
        )
        assert last == len(sequences)
    summary = {"keys": keys, "attempts": len(attempts), "retried": dict(load.retried)}
    print(json.dumps(summary))


@pytest.mark.parametrize("sender", sorted(SENDERS))
async def test_replicas_apply_each_key_once_and_charge_once_per_attempt_despite_a_kill(
    sender: str, wallets: Wallets, fake: FakeStripe, db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await _run_replicas(240, 12, SENDERS[sender], wallets, fake, db_url, pool, tmp_path)


@pytest.mark.skipif(not os.environ.get("BILLING_TEST_LONG"), reason="the long form: set BILLING_TEST_LONG=1")
@pytest.mark.parametrize("sender", sorted(SENDERS))
async def test_replicas_long_form(
    sender: str, wallets: Wallets, fake: FakeStripe, db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await _run_replicas(4000, 48, SENDERS[sender], wallets, fake, db_url, pool, tmp_path)
