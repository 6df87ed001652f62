"""Three worker processes over 100 wallets below their minimum, one SIGKILLed mid-run: every wallet gets
exactly one PaymentIntent and one credit, and none is left stuck."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg

from service.domain.money import usd
from tests.support.fake_stripe import FakeStripe

from .conftest import Wallets, charges, wait_until
from .workers import Worker

WALLETS = 100


async def test_three_processes_charge_each_of_100_wallets_exactly_once_despite_a_kill(
    wallets: Wallets, fake: FakeStripe, db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    companies = [await wallets.create(f"co-replica-{i:03d}", balance_nanos=usd(5)) for i in range(WALLETS)]
    customers = {c.customer_id: c.company_id for c in companies}
    # Each charge takes a little while at "Stripe", so the kill lands while charges are in flight.
    fake.delay_responses(0.3, method="POST", path="/v1/payment_intents", times=None)
    workers = [Worker(db_url, fake, tmp_path / f"worker-{i}.log").start() for i in range(3)]
    try:
        victim = workers[0]
        assert victim.proc is not None

        async def victim_is_waiting_on_a_charge() -> bool:
            # Some wallets are done, and the process about to be killed has a charge unanswered at
            # "Stripe" (its attempts carry its pid in the lease owner, host:pid:nonce).
            if len(charges(fake)) < 20:
                return False
            owned = {
                f"recharge-{row['attempt_id']}"
                for row in await pool.fetch(
                    "select attempt_id from recharge_attempts where lease_owner like $1",
                    f"%:{victim.proc.pid}:%",
                )
            }
            return any(
                r.status is None and r.path == "/v1/payment_intents" and r.idempotency_key in owned
                for r in fake.requests
            )

        await wait_until(victim_is_waiting_on_a_charge, timeout_s=30, what="a charge in flight in the victim")
        workers[0].kill()
        killed_at = len(charges(fake))

        async def all_credited() -> bool:
            count = await pool.fetchval(
                "select count(*) from ledger_entries where entry_type = 'recharge_credit'"
            )
            return int(count) >= WALLETS

        await wait_until(all_credited, timeout_s=60, what="a credit on every wallet")
        await asyncio.sleep(0.5)  # a few more sweeps: nothing more may happen
        for worker in workers[1:]:
            assert await worker.stop() == 0, worker.log()
    finally:
        for worker in workers:
            if worker.running:
                worker.kill()

    assert killed_at < WALLETS  # the kill did happen mid-run
    # The killed process was waiting on charges: they were never answered, and another process
    # finished them with the same key (Stripe replayed the stored answer).
    posts = [r for r in fake.requests if r.method == "POST" and r.path == "/v1/payment_intents"]
    assert any(r.status is None for r in posts)
    assert any(r.replayed for r in posts)
    per_customer = Counter(pi["customer"] for pi in charges(fake))
    assert set(per_customer) == set(customers) and set(per_customer.values()) == {1}
    assert all(pi["status"] == "succeeded" and pi["amount"] == 5000 for pi in charges(fake))
    credits = await pool.fetch(
        "select company_id, reference from ledger_entries where entry_type = 'recharge_credit'"
    )
    assert Counter(r["company_id"] for r in credits) == Counter({c.company_id: 1 for c in companies})
    assert {r["reference"] for r in credits} == {pi["id"] for pi in charges(fake)}
    stuck = await pool.fetchval("select count(*) from recharge_attempts where status <> 'succeeded'")
    assert stuck == 0
    balances = await pool.fetch("select distinct balance_nanos from wallets")
    assert [r["balance_nanos"] for r in balances] == [usd(55)]
    # Every charge request for a wallet carried that wallet's one key (retries after the kill included).
    keys_per_customer: dict[str, set[str | None]] = {}
    for request in fake.requests:
        if request.method == "POST" and request.path == "/v1/payment_intents":
            keys_per_customer.setdefault(request.params["customer"], set()).add(request.idempotency_key)
    assert all(len(keys) == 1 for keys in keys_per_customer.values())
