"""Delivery end to end: signed bodies, retries after 500s and timeouts, per-company order, failure
after the retry window and redelivery, and a slow endpoint that holds up no other."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import grpc
import stripe
from consofta.billing.v1 import wallet_service_pb2_grpc, webhook_service_pb2_grpc
from consofta.billing.v1 import webhook_service_pb2 as pb

from service.domain.money import usd
from service.metrics import REGISTRY, ServerGauges
from service.webhooks import signing
from tests.support.webhook_receiver import Receiver
from tests.webhooks.conftest import Hooks, start_hooks


def _readme_verify() -> Any:
    """The verification snippet the README gives receivers, as written there."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match is not None, "the README's verification snippet is gone"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    return namespace["verify"]


def _independent_verify(header: str, body: bytes, secret: str) -> bool:
    """Stripe's documented scheme, written out again here rather than imported from the service."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


async def test_a_delivery_is_signed_in_stripes_scheme_and_carries_money(
    hooks: Hooks, receiver: Receiver
) -> None:
    created = await hooks.endpoint(receiver.url, "manual_credit")
    secret = created.signing_secret
    assert secret.startswith("whsec_")
    company = await hooks.company()
    await hooks.credit(company, usd(12, 500_000_000))
    await receiver.wait_for(lambda got: len(got) >= 1)
    got = receiver.received[0]
    header = got.headers["Consofta-Signature"]
    # Stripe's own verification code accepts it, and so does an independent implementation.
    stripe.WebhookSignature.verify_header(got.body.decode(), header, secret, tolerance=300)
    assert _independent_verify(header, got.body, secret)
    assert signing.verify(header, got.body, secret)
    readme_verify = _readme_verify()
    assert readme_verify(header, got.body, secret)
    assert not readme_verify(header, got.body, secret + "x")
    assert not readme_verify(header, got.body, secret, tolerance_s=-1)
    assert not _independent_verify(header, got.body + b" ", secret)
    assert not signing.verify(header, got.body, "whsec_" + "x" * 43)
    event = got.event
    assert event["type"] == "manual_credit" and event["company_id"] == company
    assert event["id"] == got.headers["Consofta-Event-Id"] and event["id"].startswith("evt_")
    assert event["created"].endswith("Z") and "T" in event["created"]
    assert event["data"]["amount"] == {"currency_code": "USD", "units": "12", "nanos": 500_000_000}
    assert not any(key.endswith("_nanos") for key in event["data"])
    # The secret is shown once: listing endpoints never returns it.
    listed = await hooks.hooks.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest())
    assert [e.endpoint_id for e in listed.endpoints] == [created.endpoint.endpoint_id]
    assert secret not in str(listed)
    [delivery] = await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED)
    assert delivery.attempts == 1
    assert delivery.last_status == 200


async def test_retries_after_500s_until_the_endpoint_answers(hooks: Hooks, receiver: Receiver) -> None:
    receiver.respond = lambda _event, nth: (500 if nth < 3 else 200, 0.0)
    await hooks.endpoint(receiver.url, "manual_credit")
    company = await hooks.company()
    await hooks.credit(company, usd(1))
    await receiver.wait_for(lambda got: any(r.status == 200 for r in got))
    assert [r.status for r in receiver.received] == [500, 500, 500, 200]
    assert len({r.event["id"] for r in receiver.received}) == 1
    [delivery] = await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED)
    assert delivery.attempts == 4


def _attempts(result: str) -> float:
    return REGISTRY.get_sample_value("billing_webhook_delivery_attempts_total", {"result": result}) or 0.0


async def test_attempts_are_counted_by_result_and_pending_deliveries_are_gauged(
    hooks: Hooks, receiver: Receiver, db_url: str
) -> None:
    before = {r: _attempts(r) for r in ("delivered", "http_error")}
    receiver.respond = lambda _event, _nth: (500, 0.0)
    await hooks.endpoint(receiver.url, "manual_credit")
    company = await hooks.company()
    await hooks.credit(company, usd(1))
    await receiver.wait_for(lambda got: len(got) >= 2)
    gauges = ServerGauges(hooks.app.pool, lambda: 0, db_url)
    try:
        await gauges.refresh()
        assert (gauges.registry.get_sample_value("billing_webhook_deliveries_pending") or 0) >= 1
        assert (gauges.registry.get_sample_value("billing_webhook_oldest_pending_seconds") or 0) > 0
    finally:
        await gauges.close()
    receiver.respond = lambda _event, _nth: (200, 0.0)
    await receiver.wait_for(lambda got: any(r.status == 200 for r in got))
    await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED)
    failures = sum(1 for r in receiver.received if r.status == 500)
    assert _attempts("http_error") - before["http_error"] == failures
    assert _attempts("delivered") - before["delivered"] == 1


async def test_retries_after_a_timeout(hooks: Hooks, receiver: Receiver) -> None:
    # The first attempt answers only after 2 s; the deliverer gives up on it after 0.5 s.
    receiver.respond = lambda _event, nth: (200, 2.0 if nth == 0 else 0.0)
    await hooks.endpoint(receiver.url, "manual_credit")
    company = await hooks.company()
    await hooks.credit(company, usd(1))
    await receiver.wait_for(lambda got: len(got) >= 2)
    [delivery] = await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED)
    assert delivery.attempts == 2


async def test_a_companys_events_arrive_in_order_and_others_are_not_held_up(
    hooks: Hooks, receiver: Receiver
) -> None:
    held, free = await hooks.company(), await hooks.company()
    first: list[str] = []

    def respond(event: dict[str, Any], nth: int) -> tuple[int, float]:
        # The held company's first event fails 4 times; everything else is accepted at once.
        if event["company_id"] == held and not first:
            first.append(event["id"])
        return (500 if event["id"] in first and nth < 4 else 200), 0.0

    receiver.respond = respond
    await hooks.endpoint(receiver.url, "manual_credit")
    for _ in range(3):
        await hooks.credit(held, usd(1))
    await hooks.credit(free, usd(1))
    await receiver.wait_for(
        lambda got: sum(r.event["company_id"] == held and r.status == 200 for r in got) == 3
    )
    held_seen = [r.event["sequence"] for r in receiver.received if r.event["company_id"] == held]
    # The second event was not sent before the first succeeded, nor the third before the second.
    s = held_seen[0]
    assert held_seen == [s, s, s, s, s, s + 1, s + 2]
    first_success = next(r.at for r in receiver.received if r.event["company_id"] == held and r.status == 200)
    free_arrival = next(r.at for r in receiver.received if r.event["company_id"] == free)
    assert free_arrival < first_success


async def test_a_delivery_fails_after_its_window_and_can_be_redelivered(
    db_url: str, receiver: Receiver
) -> None:
    receiver.respond = lambda _event, _nth: (500, 0.0)
    app = await start_hooks(db_url, webhook_retry_for_s=1.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            hooks = Hooks(
                app,
                wallet_service_pb2_grpc.WalletServiceStub(channel),
                webhook_service_pb2_grpc.WebhookServiceStub(channel),
            )
            await hooks.endpoint(receiver.url, "manual_credit")
            company = await hooks.company()
            await hooks.credit(company, usd(1))
            deadline = time.monotonic() + 15
            while not await hooks.deliveries(state=pb.WEBHOOK_DELIVERY_STATE_FAILED):
                assert time.monotonic() < deadline, "the delivery never failed"
                await _sleep(0.1)
            [failed] = await hooks.deliveries(state=pb.WEBHOOK_DELIVERY_STATE_FAILED)
            assert failed.attempts >= 2 and failed.last_status == 500 and failed.last_error == "HTTP 500"
            assert failed.HasField("finished_at") and not failed.HasField("next_attempt_at")
            tries = len(receiver.received)

            receiver.respond = lambda _event, _nth: (200, 0.0)
            request = pb.RedeliverWebhookDeliveryRequest(delivery_id=failed.delivery_id, request_id="again-1")
            again = await hooks.hooks.RedeliverWebhookDelivery(request)
            assert again.delivery.state == pb.WEBHOOK_DELIVERY_STATE_PENDING
            await receiver.wait_for(lambda got: any(r.status == 200 for r in got))
            assert len(receiver.received) == tries + 1
            # The same request id again is a replay: nothing is sent a second time.
            replay = await hooks.hooks.RedeliverWebhookDelivery(request)
            assert replay.delivery.delivery_id == failed.delivery_id
            await _sleep(0.5)
            assert len(receiver.received) == tries + 1
            [done] = await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED)
            assert done.delivery_id == failed.delivery_id
    finally:
        await app.stop(grace_s=1)


async def test_a_slow_endpoint_holds_up_no_other(hooks: Hooks) -> None:
    slow, fast = Receiver(lambda _e, _n: (200, 0.4)), Receiver()
    await slow.start()
    await fast.start()
    try:
        await hooks.endpoint(slow.url, "manual_credit")
        await hooks.endpoint(fast.url, "manual_credit")
        companies = [await hooks.company() for _ in range(8)]
        for company in companies:
            await hooks.credit(company, usd(1))
        # 8 events: the fast endpoint has them all while the slow one, 0.4 s per request with at most 4
        # at once, is still working.
        events = len(companies)
        await fast.wait_for(lambda got: len(got) >= events)
        assert len(slow.received) < events
        await slow.wait_for(lambda got: len(got) >= events)
        assert sorted(r.event["id"] for r in slow.received) == sorted(r.event["id"] for r in fast.received)
    finally:
        await slow.stop()
        await fast.stop()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_the_body_is_compact_json() -> None:
    from datetime import UTC, datetime

    from service.webhooks.body import event_body

    body = event_body(
        7, "balance_alert", "acme", 3, datetime(2026, 1, 1, tzinfo=UTC), '{"threshold_nanos": -1500000000}'
    )
    assert json.loads(body)["data"] == {
        "threshold": {"currency_code": "USD", "units": "-1", "nanos": -500_000_000}
    }
    assert json.loads(body)["created"] == "2026-01-01T00:00:00.000000Z"
