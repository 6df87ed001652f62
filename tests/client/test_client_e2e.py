"""The client library against the real server: typed errors, the blocking client, and retries after a
lost response that debit once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
import grpc
import pytest
from consofta.billing.client import (
    AsyncBillingClient,
    BillingClient,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    RetryEvent,
    RetryPolicy,
    Unavailable,
    money,
    nanos_of,
    usage,
)
from consofta.billing.v1 import settings_service_pb2, usage_service_pb2, wallet_service_pb2

from service.server import BillingServer
from tests.support.lossy_proxy import LossyProxy

EMAIL_NANOS = 675_000


@pytest.fixture
async def proxy(app: BillingServer) -> AsyncIterator[LossyProxy]:
    lossy = LossyProxy("127.0.0.1", app.port)
    await lossy.start()
    yield lossy
    await lossy.stop()


async def _debits(db_url: str, company: str) -> tuple[int, int]:
    """(usage records, ledger entries) of a company, read straight from the database."""
    conn = await asyncpg.connect(db_url)
    try:
        records = await conn.fetchval("select count(*) from usage_records where company_id = $1", company)
        entries = await conn.fetchval("select count(*) from ledger_entries where company_id = $1", company)
    finally:
        await conn.close()
    return records, entries


async def _new_company(billing: AsyncBillingClient, company: str) -> str:
    await billing.create_wallet(company, f"Company {company}")
    return company


@pytest.mark.parametrize(
    ("mode", "first_error"),
    [("reset", grpc.StatusCode.UNAVAILABLE), ("stall", grpc.StatusCode.DEADLINE_EXCEEDED)],
)
async def test_a_lost_response_is_retried_with_the_same_key_and_debits_once(
    client_class: type[AsyncBillingClient],
    billing: AsyncBillingClient,
    proxy: LossyProxy,
    db_url: str,
    mode: Literal["reset", "stall"],
    first_error: grpc.StatusCode,
) -> None:
    company = await _new_company(billing, f"lost-{mode}")  # directly, not through the proxy
    events: list[RetryEvent] = []
    retry = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, on_retry=events.append)
    async with client_class(f"127.0.0.1:{proxy.port}", retry=retry, timeout_s=1.0) as client:
        proxy.lose_next_response(mode)
        reply = await client.record_email(company, 10)
    assert proxy.responses_lost == 1
    assert events and events[0].code is first_error
    # The first attempt had committed: the retry, under the same generated key, got it replayed.
    assert reply.replayed
    assert reply.usage_record.idempotency_key
    assert nanos_of(reply.balance_after) == -10 * EMAIL_NANOS
    assert await _debits(db_url, company) == (1, 1)
    wallet = (await billing.get_wallet(company)).wallet
    assert nanos_of(wallet.balance) == -10 * EMAIL_NANOS


async def test_without_retries_a_lost_response_surfaces_and_a_repeat_with_the_key_replays(
    client_class: type[AsyncBillingClient], billing: AsyncBillingClient, proxy: LossyProxy, db_url: str
) -> None:
    """What a caller does when retries ran out: repeat later with the same key; nothing is debited twice."""
    company = await _new_company(billing, "lost-manual")
    async with client_class(f"127.0.0.1:{proxy.port}", retry=RetryPolicy(max_attempts=1)) as client:
        proxy.lose_next_response("reset")
        with pytest.raises(Unavailable):
            await client.record_email(company, 2, idempotency_key="batch-1")
    again = await billing.record_email(company, 2, idempotency_key="batch-1")
    assert again.replayed
    assert await _debits(db_url, company) == (1, 1)


async def test_server_errors_arrive_as_typed_exceptions(billing: AsyncBillingClient) -> None:
    company = await _new_company(billing, "typed-errors")
    with pytest.raises(InvalidArgument) as bad:
        await billing.record_email(company, 0, request_id="trace-0001")
    assert bad.value.field == "usage.email.count"
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.request_id == "trace-0001"  # the server echoes the caller's request id

    with pytest.raises(NotFound) as missing:
        await billing.record_call("no-such-company", "outbound", "local", 60)
    assert missing.value.reason == "COMPANY_NOT_FOUND"
    assert missing.value.metadata == {"company_id": "no-such-company"}

    await billing.record_sms(company, "outbound", segments=1, idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused) as reused:
        await billing.record_sms(company, "outbound", segments=2, idempotency_key="k")
    assert reused.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert reused.value.attempts == 1


async def test_many_concurrent_calls_through_one_client_debit_exactly(billing: AsyncBillingClient) -> None:
    company = await _new_company(billing, "concurrent")
    replies = await asyncio.gather(*(billing.record_email(company, n) for n in range(1, 101)))
    assert len({r.usage_record.idempotency_key for r in replies}) == 100  # one generated key per call
    wallet = (await billing.get_wallet(company)).wallet
    assert nanos_of(wallet.balance) == -sum(range(1, 101)) * EMAIL_NANOS
    assert wallet.last_ledger_sequence == 100


async def test_the_blocking_client_works_against_the_server(app: BillingServer) -> None:
    def use_it() -> tuple[bool, int]:
        with BillingClient(
            f"127.0.0.1:{app.port}", bearer_token="ignored-while-auth-is-off", allow_insecure_token=True
        ) as client:
            client.create_wallet("blocking", "Blocking Inc", idempotency_key="create-blocking")
            first = client.record_call("blocking", "inbound", "toll_free", 61, idempotency_key="c1")
            again = client.record_call("blocking", "inbound", "toll_free", 61, idempotency_key="c1")
            balance_nanos = nanos_of(client.get_wallet("blocking").wallet.balance)
            return again.replayed and not first.replayed, balance_nanos

    # The server runs on this event loop; the blocking client runs in a thread meanwhile.
    replayed, balance_nanos = await asyncio.to_thread(use_it)
    assert replayed
    assert balance_nanos == -44_000_000  # 2 started minutes at $0.022


async def test_any_rpc_goes_through_call_with_the_same_error_handling(billing: AsyncBillingClient) -> None:
    company = await _new_company(billing, "raw-call")
    request = settings_service_pb2.GetBillingSettingsRequest(company_id=company)
    reply = await billing.call(billing.settings.GetBillingSettings, request, request_id="settings-1")
    assert reply.HasField("settings")
    with pytest.raises(NotFound):
        await billing.call(
            billing.settings.GetBillingSettings,
            settings_service_pb2.GetBillingSettingsRequest(company_id="no-such-company"),
        )


async def test_authorize_a_call_then_record_it_against_the_hold(billing: AsyncBillingClient) -> None:
    """The telecom flow through the client: reserve before the call, capture the hold when it ends."""
    company = await _new_company(billing, "hold-flow")
    await billing.call(
        billing.wallet.CreditWallet,
        wallet_service_pb2.CreditWalletRequest(
            company_id=company, amount=money(1_000_000_000), reason="test funds", request_id="fund-1"
        ),
    )
    authorized = await billing.authorize_call(company, "outbound", "toll_free", 600, idempotency_key="auth-1")
    assert authorized.allowed
    assert nanos_of(authorized.amount) == 10 * 14_000_000
    held = nanos_of((await billing.get_wallet(company)).wallet.available_balance)
    assert held == 1_000_000_000 - 10 * 14_000_000

    recorded = await billing.record_call(company, "outbound", "toll_free", 61, hold_id=authorized.hold.id)
    assert nanos_of(recorded.balance_after) == 1_000_000_000 - 2 * 14_000_000
    wallet = (await billing.get_wallet(company)).wallet
    assert nanos_of(wallet.available_balance) == nanos_of(wallet.balance)  # the hold is gone

    second = await billing.authorize_call(company, "inbound", "local", 60, idempotency_key="auth-2")
    released = await billing.release_hold(company, second.hold.id)
    assert released.hold.id == second.hold.id
    wallet = (await billing.get_wallet(company)).wallet
    assert nanos_of(wallet.available_balance) == nanos_of(wallet.balance)


async def test_a_batch_whose_response_is_lost_is_retried_with_every_items_key(
    client_class: type[AsyncBillingClient], billing: AsyncBillingClient, proxy: LossyProxy, db_url: str
) -> None:
    company = await _new_company(billing, "lost-batch")
    items = [
        usage_service_pb2.RecordUsageRequest(
            company_id=company, usage=usage("email", count=n)
        )  # no keys: the client picks
        for n in range(1, 11)
    ]
    items.append(usage_service_pb2.RecordUsageRequest(company_id="nobody", usage=usage("email", count=1)))
    retry = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
    async with client_class(f"127.0.0.1:{proxy.port}", retry=retry, timeout_s=2.0) as client:
        proxy.lose_next_response("reset")
        reply = await client.record_usage_batch(items)
    assert proxy.responses_lost == 1
    recorded = [r.recorded for r in reply.results[:10]]
    assert all(r.replayed for r in recorded)  # the first attempt had committed every item
    assert len({r.usage_record.idempotency_key for r in recorded}) == 10
    assert reply.results[10].WhichOneof("result") == "error"
    assert reply.results[10].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert await _debits(db_url, company) == (10, 10)
    assert nanos_of(recorded[-1].balance_after) == -sum(range(1, 11)) * EMAIL_NANOS
