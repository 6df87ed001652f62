"""Two deliverers on one database (two replicas): every event reaches the endpoint exactly once when no
one dies, each company's in order; the fan-out runs on one of them at a time."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

from service.app.webhook_endpoints import create_endpoint
from service.domain.money import usd
from service.domain.webhook_hosts import parse_allowed_hosts
from service.webhooks.deliverer import Deliverer, DeliverySettings
from tests.conftest import Stubs
from tests.support.webhook_receiver import Receiver
from tests.wallet.conftest import credit

COMPANIES = 12
CREDITS = 3


async def test_two_deliverers_deliver_each_event_once_in_order(
    stubs: Stubs, db_url: str, receiver: Receiver
) -> None:
    receiver.respond = lambda _event, _nth: (200, 0.01)
    pools = [await asyncpg.create_pool(db_url, min_size=1, max_size=6) for _ in range(2)]
    allowed = parse_allowed_hosts("127.0.0.1")
    await create_endpoint(pools[0], allowed, "r-1", receiver.url, ("manual_credit",), None, "", "t")
    deliverers = [Deliverer(pool, db_url, DeliverySettings(allowed, poll_s=0.2)) for pool in pools]
    for deliverer in deliverers:
        await deliverer.start()
    try:
        companies = [await stubs.new_company() for _ in range(COMPANIES)]

        async def credits(company: str) -> None:
            for _ in range(CREDITS):
                await credit(stubs, company, usd(1))

        await asyncio.gather(*(credits(c) for c in companies))
        total = COMPANIES * CREDITS
        await receiver.wait_for(lambda got: len(got) >= total, timeout_s=30)
        await asyncio.sleep(0.5)  # a duplicate would arrive meanwhile
    finally:
        for deliverer in deliverers:
            await deliverer.stop()
    ids = [r.event["id"] for r in receiver.received]
    assert len(ids) == total and len(set(ids)) == total
    assert sum(d.attempts for d in deliverers) == total
    per_company: dict[str, list[int]] = defaultdict(list)
    for r in receiver.received:
        per_company[r.event["company_id"]].append(r.event["sequence"])
    assert all(seqs == sorted(seqs) for seqs in per_company.values()), per_company
    counts = await pools[0].fetchrow(
        "select count(*) filter (where state = 'succeeded') as ok, count(*) as all from webhook_deliveries"
    )
    assert counts is not None and counts["ok"] == counts["all"] == total
    for pool in pools:
        await pool.close()


async def test_events_written_while_no_deliverer_ran_are_delivered_when_one_starts(
    stubs: Stubs, pool: asyncpg.Pool, db_url: str, receiver: Receiver
) -> None:
    allowed = parse_allowed_hosts("127.0.0.1")
    company = await stubs.new_company()
    await credit(stubs, company, usd(1), request_id="before-registration")
    await create_endpoint(pool, allowed, "r-1", receiver.url, ("manual_credit",), None, "", "t")
    # No deliverer runs: nobody hears these notifications.
    await credit(stubs, company, usd(2), request_id="after-1")
    await credit(stubs, company, usd(3), request_id="after-2")
    deliverer = Deliverer(pool, db_url, DeliverySettings(allowed))
    await deliverer.start()
    try:
        await receiver.wait_for(lambda got: len(got) >= 2)
        await asyncio.sleep(0.3)
    finally:
        await deliverer.stop()
    # The credit from before the endpoint existed is not sent; the two after it are, in order.
    assert [r.event["data"]["request_id"] for r in receiver.received] == ["after-1", "after-2"]
