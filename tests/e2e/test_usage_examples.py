"""Every example of tests/support/usage_examples.py (one per rate key of every kind) end to end on a real
server: recorded through both clients' generic `record`, held and captured, and listed by its category,
at the price the table writes out."""

from __future__ import annotations

import asyncio

import pytest
from consofta.billing.client import AsyncBillingClient, BillingClient
from consofta.billing.v1 import reporting_pb2, usage_service_pb2, wallet_service_pb2

from service.api.wire.money import money, nanos_of
from service.api.wire.usage import category_message, usage_message
from service.server import BillingServer
from tests.conftest import Stubs
from tests.support.usage_examples import EXAMPLES, Example

FUNDS_NANOS = 100 * 10**9


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.rate_key)
async def test_each_example_is_recorded_held_captured_and_listed_at_its_price(
    example: Example, stubs: Stubs, billing: AsyncBillingClient, app: BillingServer
) -> None:
    company = await stubs.new_company()
    await stubs.wallet.CreditWallet(
        wallet_service_pb2.CreditWalletRequest(
            company_id=company, amount=money(FUNDS_NANOS), reason="funds", request_id="funds"
        )
    )

    recorded = await billing.record(company, example.kind, **example.client_fields())
    assert recorded.usage_record.price.billable_units == example.billable_units
    assert nanos_of(recorded.usage_record.price.amount) == example.amount_nanos
    assert nanos_of(recorded.balance_after) == FUNDS_NANOS - example.amount_nanos

    held = await stubs.wallet.AuthorizeUsage(
        wallet_service_pb2.AuthorizeUsageRequest(
            company_id=company, usage=usage_message(example.usage), request_id="hold"
        )
    )
    assert held.allowed
    assert nanos_of(held.amount) == example.amount_nanos
    captured = await stubs.usage.RecordUsage(
        usage_service_pb2.RecordUsageRequest(
            company_id=company,
            idempotency_key="capture",
            usage=usage_message(example.usage),
            hold_id=held.hold.id,
        )
    )
    assert nanos_of(captured.usage_record.price.amount) == example.amount_nanos

    def record_blocking() -> int:
        with BillingClient(f"127.0.0.1:{app.port}") as client:
            reply = client.record(company, example.kind, **example.client_fields())
            return nanos_of(reply.usage_record.price.amount)

    assert await asyncio.to_thread(record_blocking) == example.amount_nanos

    listed = await stubs.usage.ListUsageRecords(
        reporting_pb2.ListUsageRecordsRequest(
            company_id=company, categories=[category_message(example.rate_key)]
        )
    )
    assert len(listed.usage_records) == 3
    assert all(nanos_of(r.price.amount) == example.amount_nanos for r in listed.usage_records)
    wallet = await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
    assert nanos_of(wallet.wallet.balance) == FUNDS_NANOS - 3 * example.amount_nanos
