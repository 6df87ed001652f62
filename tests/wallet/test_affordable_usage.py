"""Affordable usage: AuthorizeUsage and ExtendHold say how much of a usage the wallet affords, exact at
the boundaries, never promising more than the wallet holds, and holds grow while a call goes on."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, wallet_service_pb2
from google.protobuf.duration_pb2 import Duration

from service.api.wire.money import nanos_of
from service.app.wallets import set_credit_limit
from service.domain.money import usd
from service.domain.pricing import affordable_quantity, affordable_units, billable_minutes
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.wallet.conftest import credit, emails, get_wallet, outbound_call, record

MINUTE_NANOS = usd(0, 14_000_000)  # an outbound call to a local number
EMAIL_NANOS = 675_000
SEGMENT_NANOS = 7_900_000
INSUFFICIENT = wallet_service_pb2.AUTHORIZATION_DENIAL_INSUFFICIENT_FUNDS


def authorize(
    company: str, request_id: str, usage: usage_pb2.Usage, *, allow_partial: bool = False
) -> wallet_service_pb2.AuthorizeUsageRequest:
    return wallet_service_pb2.AuthorizeUsageRequest(
        company_id=company, request_id=request_id, usage=usage, allow_partial=allow_partial
    )


def extend(
    company: str, hold_id: str, request_id: str, quantity: int, *, allow_partial: bool = False
) -> wallet_service_pb2.ExtendHoldRequest:
    return wallet_service_pb2.ExtendHoldRequest(
        company_id=company,
        hold_id=hold_id,
        request_id=request_id,
        additional_quantity=quantity,
        allow_partial=allow_partial,
        hold_duration=Duration(seconds=3600),
    )


def sms(segments: int) -> usage_pb2.Usage:
    return usage_pb2.Usage(
        sms=usage_pb2.SmsUsage(direction=usage_pb2.SMS_DIRECTION_OUTBOUND, segments=segments)
    )


@pytest.mark.parametrize(("less_nanos", "minutes"), [(0, 37), (1, 36)])
async def test_a_balance_that_buys_exactly_n_minutes_affords_n_times_60_seconds(
    stubs: Stubs, less_nanos: int, minutes: int
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 37 * MINUTE_NANOS - less_nanos)
    refused = await stubs.wallet.AuthorizeUsage(authorize(company, "two-hours", outbound_call(7200)))
    assert not refused.allowed and refused.denial == INSUFFICIENT
    assert refused.affordable_quantity == minutes * 60
    # A call of exactly the affordable seconds is affordable whole; one second more is not.
    fits = await stubs.wallet.AuthorizeUsage(authorize(company, "fits", outbound_call(minutes * 60)))
    assert fits.allowed and fits.affordable_quantity == minutes * 60
    await stubs.wallet.ReleaseHold(
        wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=fits.hold.id)
    )
    over = await stubs.wallet.AuthorizeUsage(authorize(company, "over", outbound_call(minutes * 60 + 1)))
    assert not over.allowed and over.affordable_quantity == minutes * 60
    # With allow_partial the call is held for what is affordable, and the telephony service caps it there.
    partial = await stubs.wallet.AuthorizeUsage(
        authorize(company, "partial", outbound_call(7200), allow_partial=True)
    )
    assert partial.allowed
    assert partial.affordable_quantity == partial.hold.authorized_quantity == minutes * 60
    assert nanos_of(partial.hold.amount) == minutes * MINUTE_NANOS
    assert nanos_of(partial.available_balance) == (37 - minutes) * MINUTE_NANOS - less_nanos


@pytest.mark.parametrize(
    ("usage", "unit_nanos", "wanted"),
    [(emails(5000), EMAIL_NANOS, 5000), (sms(40), SEGMENT_NANOS, 40)],
    ids=["email", "sms"],
)
@pytest.mark.parametrize("less_nanos", [0, 1])
async def test_emails_and_segments_are_affordable_by_the_whole_count(
    stubs: Stubs, usage: usage_pb2.Usage, unit_nanos: int, wanted: int, less_nanos: int
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 17 * unit_nanos - less_nanos)
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "batch", usage))
    assert not reply.allowed
    assert reply.affordable_quantity == 17 - less_nanos


async def test_open_holds_and_the_credit_limit_count(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 10 * MINUTE_NANOS)
    first = await stubs.wallet.AuthorizeUsage(authorize(company, "first", outbound_call(4 * 60)))
    assert first.allowed
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "probe", outbound_call(3600)))
    assert reply.affordable_quantity == 6 * 60
    await set_credit_limit(pool, company, 5 * MINUTE_NANOS, "test")
    reply = await stubs.wallet.AuthorizeUsage(authorize(company, "probe-2", outbound_call(3600)))
    assert reply.affordable_quantity == 11 * 60


@pytest.mark.parametrize("funds", [-5, 0, 1, 13_999_999, 14_000_000, 10**12])
@pytest.mark.parametrize("price", [0, 1, 14_000_000])
def test_the_affordability_rule_is_the_inverse_of_per_started_minute(funds: int, price: int) -> None:
    wanted_seconds = 7200
    wanted_units = billable_minutes(wanted_seconds)
    units = affordable_units(funds, price, wanted_units)
    seconds = affordable_quantity(units, wanted_units, wanted_seconds, 60)
    assert 0 <= seconds <= wanted_seconds
    # What is affordable costs no more than the funds, and one more started minute would cost more.
    assert billable_minutes(seconds) * price <= max(funds, 0) or price == 0
    if seconds < wanted_seconds:
        assert (billable_minutes(seconds) + 1) * price > funds


async def test_concurrent_partial_authorizations_never_promise_more_than_the_wallet_holds(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 123 * MINUTE_NANOS + MINUTE_NANOS - 1)
    replies = await asyncio.gather(
        *(
            stubs.wallet.AuthorizeUsage(
                authorize(company, f"call-{i}", outbound_call(600), allow_partial=True)
            )
            for i in range(40)
        )
    )
    allowed = [r for r in replies if r.allowed]
    # 12 calls of 10 minutes, one of 3, then nothing: exactly 123 minutes promised in all.
    assert sorted(r.hold.authorized_quantity for r in allowed) == [180] + [600] * 12
    assert sum(nanos_of(r.hold.amount) for r in allowed) == 123 * MINUTE_NANOS
    assert all(r.affordable_quantity == 0 and r.denial == INSUFFICIENT for r in replies if not r.allowed)
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.available_balance) == MINUTE_NANOS - 1
    held = await pool.fetchval("select sum(amount_nanos) from holds where company_id = $1", company)
    assert held == 123 * MINUTE_NANOS


async def test_a_hold_is_extended_while_the_call_goes_on_then_captured(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 20 * MINUTE_NANOS)
    auth = await stubs.wallet.AuthorizeUsage(authorize(company, "call-1", outbound_call(300)))
    assert auth.allowed and auth.hold.authorized_quantity == 300
    hold_id = auth.hold.id

    more = await stubs.wallet.ExtendHold(extend(company, hold_id, "call-1-ext-1", 330))
    assert more.extended and not more.replayed
    assert more.hold.authorized_quantity == 630
    assert nanos_of(more.hold.amount) == 11 * MINUTE_NANOS  # 630 s start 11 minutes
    assert nanos_of(more.added_amount) == 6 * MINUTE_NANOS
    assert more.affordable_quantity == 330
    assert nanos_of(more.available_balance) == 9 * MINUTE_NANOS
    again = await stubs.wallet.ExtendHold(extend(company, hold_id, "call-1-ext-1", 330))
    assert (
        again.replayed
        and again.hold.authorized_quantity == 630
        and nanos_of(again.added_amount) == 6 * MINUTE_NANOS
    )

    # Ten more minutes are not affordable: 9 minutes are left, and the 11th minute is already held in part.
    refused = await stubs.wallet.ExtendHold(extend(company, hold_id, "call-1-ext-2", 600))
    assert not refused.extended and refused.denial == INSUFFICIENT
    assert refused.hold.authorized_quantity == 630
    assert refused.affordable_quantity == 20 * 60 - 630  # up to the end of the 20th minute
    partial = await stubs.wallet.ExtendHold(extend(company, hold_id, "call-1-ext-3", 600, allow_partial=True))
    assert partial.extended and partial.hold.authorized_quantity == 1200
    assert nanos_of(partial.available_balance) == 0

    done = await stubs.usage.RecordUsage(record(company, "call-1", outbound_call(1100), hold_id=hold_id))
    assert nanos_of(done.balance_after) == 20 * MINUTE_NANOS - 19 * MINUTE_NANOS
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.available_balance) == MINUTE_NANOS and nanos_of(wallet.held) == 0

    with pytest.raises(grpc.aio.AioRpcError) as captured:
        await stubs.wallet.ExtendHold(extend(company, hold_id, "call-1-ext-4", 60))
    assert captured.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rich_error(captured.value).reason == "HOLD_ALREADY_CAPTURED"


async def test_extend_hold_checks_its_request(stubs: Stubs) -> None:
    company = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stubs.wallet.ExtendHold(
            wallet_service_pb2.ExtendHoldRequest(company_id=company, hold_id="nope", request_id="x")
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = set(rich_error(bad.value).fields)
    assert fields == {"hold_id", "additional_quantity"}
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stubs.wallet.ExtendHold(extend(company, "00000000-0000-0000-0000-000000000001", "x", 60))
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_hold_below_the_minimum_emits_the_event_the_recharge_follows(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await pool.execute("update wallets set minimum_balance_nanos = $2 where company_id = $1", company, usd(1))
    await credit(stubs, company, usd(2))
    small = await stubs.wallet.AuthorizeUsage(authorize(company, "small", outbound_call(60 * 50)))
    assert small.allowed  # $0.70 held: $1.30 available, still above the minimum
    big = await stubs.wallet.AuthorizeUsage(authorize(company, "big", outbound_call(60 * 30)))
    assert big.allowed  # $0.42 more: $0.88 available, below
    events = await pool.fetch(
        "select payload from wallet_events where company_id = $1 and event_type = 'balance_below_minimum'",
        company,
    )
    assert len(events) == 1
    assert '"cause": "hold"' in events[0]["payload"] and big.hold.id in events[0]["payload"]
