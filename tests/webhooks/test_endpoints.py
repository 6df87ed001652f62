"""Endpoint management over gRPC: a retried create returns the same endpoint and secret, a reused
request id with another request is refused, disable stops deliveries, and the delivery listing pages."""

from __future__ import annotations

import grpc
import pytest
from consofta.billing.v1 import webhook_service_pb2 as pb

from service.domain.money import usd
from tests.support.rpc import rich_error
from tests.support.webhook_receiver import Receiver
from tests.webhooks.conftest import Hooks


async def test_create_is_idempotent_under_its_request_id(hooks: Hooks, receiver: Receiver) -> None:
    request = pb.CreateWebhookEndpointRequest(
        url=receiver.url, event_types=["balance_alert"], request_id="ep-1"
    )
    first = await hooks.hooks.CreateWebhookEndpoint(request)
    again = await hooks.hooks.CreateWebhookEndpoint(request)
    assert again.endpoint.endpoint_id == first.endpoint.endpoint_id
    assert again.signing_secret == first.signing_secret
    other = pb.CreateWebhookEndpointRequest(url=receiver.url, request_id="ep-1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.hooks.CreateWebhookEndpoint(other)
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert rich_error(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"
    listed = await hooks.hooks.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest())
    assert len(listed.endpoints) == 1


async def test_a_disabled_endpoint_is_sent_nothing_more(hooks: Hooks, receiver: Receiver) -> None:
    created = await hooks.endpoint(receiver.url, "manual_credit")
    company = await hooks.company()
    await hooks.credit(company, usd(1))
    await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED)
    off = pb.DisableWebhookEndpointRequest(endpoint_id=created.endpoint.endpoint_id, request_id="off-1")
    disabled = await hooks.hooks.DisableWebhookEndpoint(off)
    assert disabled.endpoint.HasField("disabled_at")
    assert (
        await hooks.hooks.DisableWebhookEndpoint(off)
    ).endpoint.disabled_at == disabled.endpoint.disabled_at
    await hooks.credit(company, usd(1))
    listed = await hooks.hooks.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest())
    assert list(listed.endpoints) == []
    with_disabled = await hooks.hooks.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(include_disabled=True)
    )
    assert [e.endpoint_id for e in with_disabled.endpoints] == [created.endpoint.endpoint_id]
    assert len(receiver.received) == 1
    unknown = pb.DisableWebhookEndpointRequest(endpoint_id="we_aaaaaaaaaaaaaaaa", request_id="off-2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.hooks.DisableWebhookEndpoint(unknown)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_deliveries_page_newest_first(hooks: Hooks, receiver: Receiver) -> None:
    await hooks.endpoint(receiver.url, "manual_credit")
    company = await hooks.company()
    for _ in range(5):
        await hooks.credit(company, usd(1))
    await hooks.settled(pb.WEBHOOK_DELIVERY_STATE_SUCCEEDED, count=5)
    seen: list[int] = []
    token = ""
    while True:
        page = await hooks.hooks.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(page_size=2, page_token=token, company_id=company)
        )
        seen += [d.delivery_id for d in page.deliveries]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.hooks.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(page_token="nonsense"))
    assert set(rich_error(caught.value).fields) == {"page_token"}


async def test_a_pending_delivery_cannot_be_redelivered(hooks: Hooks, receiver: Receiver) -> None:
    receiver.respond = lambda _event, _nth: (500, 0.0)
    await hooks.endpoint(receiver.url, "manual_credit")
    await hooks.credit(await hooks.company(), usd(1))
    await receiver.wait_for(lambda got: len(got) >= 1)
    [pending] = await hooks.deliveries(state=pb.WEBHOOK_DELIVERY_STATE_PENDING)
    request = pb.RedeliverWebhookDeliveryRequest(delivery_id=pending.delivery_id, request_id="again")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.hooks.RedeliverWebhookDelivery(request)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rich_error(caught.value).reason == "WEBHOOK_DELIVERY_PENDING"
