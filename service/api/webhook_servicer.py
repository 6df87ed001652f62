"""WebhookService: register outbound webhook endpoints, list them, disable them, list and redeliver
their deliveries. A thin edge: check the request, call `service.app.webhook_endpoints`, encode."""

from __future__ import annotations

from typing import Any

import asyncpg
from consofta.billing.v1 import webhook_service_pb2 as pb
from consofta.billing.v1 import webhook_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.auth import audit_principal_id
from service.api.validation import Violations, check_company_id, check_request_key
from service.api.wire.enums import EnumTable
from service.api.wire.timestamps import timestamp
from service.app import webhook_endpoints as hooks
from service.domain.text import excerpt
from service.domain.webhook_hosts import AllowedHosts

STATE_TABLE: EnumTable[str] = EnumTable(pb.WebhookDeliveryState.DESCRIPTOR, hooks.STATES)
DEFAULT_PAGE_SIZE = 100
Context = ServicerContext[Any, Any]


def endpoint_message(endpoint: hooks.Endpoint) -> pb.WebhookEndpoint:
    message = pb.WebhookEndpoint(
        endpoint_id=endpoint.endpoint_id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        company_id=endpoint.company_id or "",
        description=endpoint.description,
        created_at=timestamp(endpoint.created_at),
        created_by=endpoint.created_by,
    )
    if endpoint.disabled_at is not None:
        message.disabled_at.CopyFrom(timestamp(endpoint.disabled_at))
    return message


def delivery_message(delivery: hooks.Delivery) -> pb.WebhookDelivery:
    message = pb.WebhookDelivery(
        delivery_id=delivery.delivery_id,
        endpoint_id=delivery.endpoint_id,
        company_id=delivery.company_id,
        event_id=delivery.event_id,
        event_sequence=delivery.event_sequence,
        state=STATE_TABLE.wire(delivery.state),  # type: ignore[arg-type]
        attempts=delivery.attempts,
        last_status=delivery.last_status or 0,
        last_error=delivery.last_error or "",
        created_at=timestamp(delivery.created_at),
    )
    if delivery.next_attempt_at is not None:
        message.next_attempt_at.CopyFrom(timestamp(delivery.next_attempt_at))
    if delivery.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(delivery.finished_at))
    return message


def _check_endpoint_id(v: Violations, value: str, field: str = "endpoint_id") -> None:
    if not hooks.ENDPOINT_ID.fullmatch(value):
        v.add(field, f"must be a webhook endpoint id (we_ and 16 characters), got {excerpt(value)}")


class WebhookServicer(webhook_service_pb2_grpc.WebhookServiceServicer):
    def __init__(self, pool: asyncpg.Pool, allowed: AllowedHosts, retry_for_s: float) -> None:
        self._pool = pool
        self._allowed = allowed
        self._retry_for_s = retry_for_s

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Context
    ) -> pb.CreateWebhookEndpointResponse:
        v = Violations()
        check_request_key(v, request.request_id, "request_id")
        if request.company_id:
            check_company_id(v, request.company_id)
        v.raise_if_any()
        created = await hooks.create_endpoint(
            self._pool,
            self._allowed,
            request.request_id,
            request.url,
            tuple(request.event_types),
            request.company_id or None,
            request.description,
            audit_principal_id(),
        )
        return pb.CreateWebhookEndpointResponse(
            endpoint=endpoint_message(created.endpoint), signing_secret=created.signing_secret
        )

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Context
    ) -> pb.ListWebhookEndpointsResponse:
        found = await hooks.list_endpoints(self._pool, request.include_disabled)
        return pb.ListWebhookEndpointsResponse(endpoints=[endpoint_message(e) for e in found])

    async def DisableWebhookEndpoint(
        self, request: pb.DisableWebhookEndpointRequest, context: Context
    ) -> pb.DisableWebhookEndpointResponse:
        v = Violations()
        _check_endpoint_id(v, request.endpoint_id)
        check_request_key(v, request.request_id, "request_id")
        v.raise_if_any()
        endpoint = await hooks.disable_endpoint(
            self._pool, request.request_id, request.endpoint_id, audit_principal_id()
        )
        return pb.DisableWebhookEndpointResponse(endpoint=endpoint_message(endpoint))

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        v = Violations()
        if request.endpoint_id:
            _check_endpoint_id(v, request.endpoint_id)
        if request.company_id:
            check_company_id(v, request.company_id)
        state = STATE_TABLE.domain(request.state)
        if request.state and state is None:
            v.add("state", f"must be one of {STATE_TABLE.choices()}, or unspecified for every state")
        if not 0 <= request.page_size <= hooks.MAX_PAGE_SIZE:
            v.add("page_size", f"must be between 1 and {hooks.MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})")
        below = hooks.parse_page_token(request.page_token)
        if below is None:
            v.add("page_token", "is not a page token of ListWebhookDeliveries")
        v.raise_if_any()
        assert below is not None
        found, token = await hooks.list_deliveries(
            self._pool,
            request.endpoint_id or None,
            state,
            request.company_id or None,
            below,
            request.page_size or DEFAULT_PAGE_SIZE,
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery_message(d) for d in found], next_page_token=token
        )

    async def RedeliverWebhookDelivery(
        self, request: pb.RedeliverWebhookDeliveryRequest, context: Context
    ) -> pb.RedeliverWebhookDeliveryResponse:
        v = Violations()
        if request.delivery_id <= 0:
            v.add("delivery_id", "is required: a delivery id from ListWebhookDeliveries")
        check_request_key(v, request.request_id, "request_id")
        v.raise_if_any()
        delivery = await hooks.redeliver(
            self._pool, request.request_id, request.delivery_id, self._retry_for_s
        )
        return pb.RedeliverWebhookDeliveryResponse(delivery=delivery_message(delivery))
