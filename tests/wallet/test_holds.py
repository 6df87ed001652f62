"""Holds end to end: authorize before usage, capture through RecordUsage, release, expiry, suspension."""

from __future__ import annotations

import asyncio
from datetime import UTC

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, wallet_service_pb2
from google.protobuf.duration_pb2 import Duration

from service.api.wire.money import nanos_of
from service.app.wallets import set_credit_limit
from service.domain.money import usd
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.wallet.conftest import (
    add_card,
    available_nanos,
    credit,
    emails,
    get_wallet,
    outbound_call,
    record,
)

THOUSAND_EMAILS_NANOS = usd(0, 675_000_000)
MINUTE_OUTBOUND_NANOS = usd(0, 14_000_000)


def authorize(
    company: str, request_id: str, usage: usage_pb2.Usage, duration_s: int | None = None
) -> wallet_service_pb2.AuthorizeUsageRequest:
    request = wallet_service_pb2.AuthorizeUsageRequest(company_id=company, request_id=request_id, usage=usage)
    if duration_s is not None:
        request.hold_duration.CopyFrom(Duration(seconds=duration_s))
    return request


async def test_exactly_ten_of_a_hundred_concurrent_authorizations_fit_a_wallet_funded_for_ten(
    stubs: Stubs,
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 10 * THOUSAND_EMAILS_NANOS)
    replies = await asyncio.gather(
        *(stubs.wallet.AuthorizeUsage(authorize(company, f"auth-{i}", emails(1000))) for i in range(100))
    )
    allowed = [r for r in replies if r.allowed]
    denied = [r for r in replies if not r.allowed]
    assert len(allowed) == 10
    assert len({r.hold.id for r in allowed}) == 10
    assert all(nanos_of(r.hold.amount) == THOUSAND_EMAILS_NANOS for r in allowed)
    assert all(r.denial == wallet_service_pb2.AUTHORIZATION_DENIAL_INSUFFICIENT_FUNDS for r in denied)
    assert all("available above the floor" in r.denial_message for r in denied)
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.balance) == 10 * THOUSAND_EMAILS_NANOS
    assert nanos_of(wallet.held) == 10 * THOUSAND_EMAILS_NANOS
    assert nanos_of(wallet.available_balance) == 0


async def test_an_expired_hold_stops_counting_without_any_call(stubs: Stubs, pool: asyncpg.Pool) -> None:
    # Real time: a one-second hold; nothing but the passing of time touches it.
    company = await stubs.new_company()
    await credit(stubs, company, usd(5))
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "short", emails(1000), duration_s=1))
    assert reply.allowed
    assert nanos_of(reply.available_balance) == usd(5) - THOUSAND_EMAILS_NANOS
    expires_at = reply.hold.expires_at.ToDatetime(tzinfo=UTC)
    # Sleep past the expiry by the database's clock, which decides; no upper bound is asserted.
    wait_s = await pool.fetchval("select extract(epoch from ($1 - now()))::float8", expires_at)
    await asyncio.sleep(max(0.0, wait_s) + 0.2)
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.available_balance) == usd(5)
    assert nanos_of(wallet.held) == 0
    # No sweeper wrote anything: the row is still 'active'; expiry is computed at read time.
    assert await pool.fetchval("select state from holds where hold_id = $1::uuid", reply.hold.id) == "active"
    released = await stubs.wallet.ReleaseHold(
        wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=reply.hold.id)
    )
    assert released.hold.state == wallet_service_pb2.HOLD_STATE_EXPIRED


async def test_expiry_is_computed_at_read_time(stubs: Stubs, pool: asyncpg.Pool) -> None:
    # Moving the expiry into the past (as a clock would) is enough: the next read no longer counts it.
    company = await stubs.new_company()
    await credit(stubs, company, usd(5))
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "h", emails(1000)))
    assert await available_nanos(stubs, company) == usd(5) - THOUSAND_EMAILS_NANOS
    await pool.execute(
        "update holds set expires_at = now() - interval '1 second' where hold_id = $1::uuid", reply.hold.id
    )
    assert await available_nanos(stubs, company) == usd(5)


@pytest.mark.parametrize(
    ("used_seconds", "debit_nanos"), [(180, 3 * MINUTE_OUTBOUND_NANOS), (900, 15 * MINUTE_OUTBOUND_NANOS)]
)
async def test_capture_debits_the_actual_usage_whether_less_or_more_than_held(
    stubs: Stubs, used_seconds: int, debit_nanos: int
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    held = await stubs.wallet.AuthorizeUsage(authorize(company, "call-1", outbound_call(600)))
    assert held.allowed and nanos_of(held.hold.amount) == 10 * MINUTE_OUTBOUND_NANOS
    recorded = await stubs.usage.RecordUsage(
        record(company, "call-1-end", outbound_call(used_seconds), held.hold.id)
    )
    assert nanos_of(recorded.balance_after) == usd(1) - debit_nanos
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.balance) == usd(1) - debit_nanos
    assert nanos_of(wallet.held) == 0
    assert nanos_of(wallet.available_balance) == usd(1) - debit_nanos


async def test_a_hold_is_captured_once_only(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    held = await stubs.wallet.AuthorizeUsage(authorize(company, "call", outbound_call(600)))
    first = await stubs.usage.RecordUsage(record(company, "end-1", outbound_call(60), held.hold.id))
    # A retry of the same request is a replay, not a second capture.
    again = await stubs.usage.RecordUsage(record(company, "end-1", outbound_call(60), held.hold.id))
    assert again.replayed and again.usage_record == first.usage_record
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(record(company, "end-2", outbound_call(60), held.hold.id))
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "HOLD_ALREADY_CAPTURED"
    assert first.usage_record.id in error.message
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.ReleaseHold(
            wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=held.hold.id)
        )
    assert rich_error(caught.value).reason == "HOLD_ALREADY_CAPTURED"
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(1) - MINUTE_OUTBOUND_NANOS


async def test_concurrent_captures_of_one_hold_debit_once(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    held = await stubs.wallet.AuthorizeUsage(authorize(company, "call", outbound_call(600)))
    results = await asyncio.gather(
        *(
            stubs.usage.RecordUsage(record(company, f"end-{i}", outbound_call(60), held.hold.id))
            for i in range(10)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(refused) == 9
    assert all(rich_error(r).reason == "HOLD_ALREADY_CAPTURED" for r in refused)
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(1) - MINUTE_OUTBOUND_NANOS


async def test_the_same_key_naming_another_hold_is_a_reused_key(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    a = await stubs.wallet.AuthorizeUsage(authorize(company, "a", outbound_call(60)))
    b = await stubs.wallet.AuthorizeUsage(authorize(company, "b", outbound_call(60)))
    await stubs.usage.RecordUsage(record(company, "end", outbound_call(60), a.hold.id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(record(company, "end", outbound_call(60), b.hold.id))
    assert rich_error(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"


async def test_unknown_or_foreign_holds_are_not_found(stubs: Stubs) -> None:
    mine, theirs = await stubs.new_company(), await stubs.new_company()
    await credit(stubs, theirs, usd(1))
    foreign = await stubs.wallet.AuthorizeUsage(authorize(theirs, "x", outbound_call(60)))
    for hold_id in (foreign.hold.id, "0b4c2a7e-9d7e-4a4f-a3e4-6b0f8d9a1c55"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.usage.RecordUsage(record(mine, f"k-{hold_id}", outbound_call(60), hold_id))
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.wallet.ReleaseHold(
                wallet_service_pb2.ReleaseHoldRequest(company_id=mine, hold_id=hold_id)
            )
        assert rich_error(caught.value).code is grpc.StatusCode.NOT_FOUND
    # Nothing was recorded for `mine`, and the other company's hold is untouched.
    assert (await get_wallet(stubs, mine)).last_ledger_sequence == 0
    assert nanos_of((await get_wallet(stubs, theirs)).held) == MINUTE_OUTBOUND_NANOS


async def test_release_frees_the_funds_and_is_idempotent(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    held = await stubs.wallet.AuthorizeUsage(authorize(company, "h", outbound_call(600)))
    assert await available_nanos(stubs, company) == usd(1) - 10 * MINUTE_OUTBOUND_NANOS
    request = wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=held.hold.id)
    first = await stubs.wallet.ReleaseHold(request)
    second = await stubs.wallet.ReleaseHold(request)
    assert first.hold.state == second.hold.state == wallet_service_pb2.HOLD_STATE_RELEASED
    assert await available_nanos(stubs, company) == usd(1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(record(company, "late", outbound_call(60), held.hold.id))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED")


async def test_authorization_is_idempotent_under_its_request_id(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    first = await stubs.wallet.AuthorizeUsage(authorize(company, "r", emails(1000)))
    again = await stubs.wallet.AuthorizeUsage(authorize(company, "r", emails(1000)))
    assert again.replayed and not first.replayed
    assert again.hold == first.hold
    assert nanos_of((await get_wallet(stubs, company)).held) == THOUSAND_EMAILS_NANOS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.AuthorizeUsage(authorize(company, "r", emails(999)))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


async def test_a_suspended_wallet_refuses_authorization_but_records_usage(stubs: Stubs) -> None:
    # A new wallet has no money and no card: it is at the floor with no card, so suspended.
    company = await stubs.new_company()
    wallet = await get_wallet(stubs, company)
    assert wallet.status == wallet_service_pb2.WALLET_STATUS_SUSPENDED
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "a", emails(1)))
    assert not reply.allowed
    assert reply.denial == wallet_service_pb2.AUTHORIZATION_DENIAL_WALLET_SUSPENDED
    assert "suspended" in reply.denial_message
    recorded = await stubs.usage.RecordUsage(record(company, "u", emails(1000)))
    assert nanos_of(recorded.balance_after) == -THOUSAND_EMAILS_NANOS


async def test_a_wallet_whose_last_recharge_failed_is_suspended_at_the_floor(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await add_card(pool, company)
    assert (await get_wallet(stubs, company)).status == wallet_service_pb2.WALLET_STATUS_ACTIVE
    # Not suspended with a card: a zero balance is simply insufficient.
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "a", emails(1)))
    assert reply.denial == wallet_service_pb2.AUTHORIZATION_DENIAL_INSUFFICIENT_FUNDS
    await pool.execute("select emit_wallet_event($1, 'recharge_failed', '{}')", company)
    assert (await get_wallet(stubs, company)).status == wallet_service_pb2.WALLET_STATUS_SUSPENDED
    await pool.execute("select emit_wallet_event($1, 'recharge_succeeded', '{}')", company)
    assert (await get_wallet(stubs, company)).status == wallet_service_pb2.WALLET_STATUS_ACTIVE


async def test_a_credit_limit_lowers_the_floor(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    await add_card(pool, company)
    await set_credit_limit(pool, company, usd(1), actor="test")
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.authorization_floor) == -usd(1)
    # $1 of credit holds exactly one 1,000-email batch ($0.675) but not a second.
    first = await stubs.wallet.AuthorizeUsage(authorize(company, "1", emails(1000)))
    second = await stubs.wallet.AuthorizeUsage(authorize(company, "2", emails(1000)))
    assert first.allowed and not second.allowed
    assert nanos_of(first.available_balance) == -THOUSAND_EMAILS_NANOS


async def test_bad_authorization_requests_name_the_field(stubs: Stubs) -> None:
    company = await stubs.new_company()
    cases = [
        (authorize(company, "r", emails(1), duration_s=0), "hold_duration"),
        (authorize(company, "r", emails(1), duration_s=90_000), "hold_duration"),
        (authorize(company, "", emails(1)), "request_id"),
        (authorize(company, "r", emails(0)), "usage.email.count"),
        (wallet_service_pb2.AuthorizeUsageRequest(company_id=company, request_id="r"), "usage"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.wallet.AuthorizeUsage(request)
        error = rich_error(caught.value)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.fields, (field, error.fields)
    for bad in ("not-a-uuid", ""):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.wallet.ReleaseHold(
                wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=bad)
            )
        assert "hold_id" in rich_error(caught.value).fields
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(record(company, "k", emails(1), "nope"))
    assert "hold_id" in rich_error(caught.value).fields
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.AuthorizeUsage(authorize("no-such-co", "r", emails(1)))
    assert rich_error(caught.value).code is grpc.StatusCode.NOT_FOUND
