"""RecordUsageBatch end to end: one result per item, each exactly what RecordUsage would answer it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, usage_service_pb2, wallet_service_pb2

from service.api.wire.money import nanos_of
from tests.conftest import Stubs
from tests.support.rpc import RichError, rich_error, rich_status
from tests.wallet.conftest import credit

EMAIL_NANOS = 675_000
FUNDS_NANOS = 100 * 10**9


def email(company: str, key: str, count: int = 1, hold_id: str = "") -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count)),
        hold_id=hold_id,
    )


def sms(company: str, key: str) -> usage_service_pb2.RecordUsageRequest:
    request = usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(sms=usage_pb2.SmsUsage(direction=usage_pb2.SMS_DIRECTION_OUTBOUND, segments=1)),
    )
    # A fixed moment, so that the error message (which names it) is the same for the unary call.
    request.occurred_at.FromDatetime(datetime.now(UTC) - timedelta(seconds=10))
    return request


async def _unary_error(stubs: Stubs, request: usage_service_pb2.RecordUsageRequest) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(request)
    return rich_error(caught.value)


async def _hold(stubs: Stubs, company: str, request_id: str) -> str:
    reply = await stubs.wallet.AuthorizeUsage(
        wallet_service_pb2.AuthorizeUsageRequest(
            company_id=company,
            request_id=request_id,
            usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1)),
        )
    )
    assert reply.allowed
    return reply.hold.id


async def test_each_item_gets_what_record_usage_would_answer_it(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    other = await stubs.new_company()
    # A new default card version that lists emails only (at the same price): a text message now has no
    # rate (NO_RATE_CARD).
    card_id = await pool.fetchval(
        "insert into rate_cards (company_id, version, effective_from) select null, max(version) + 1,"
        " now() - interval '1 minute' from rate_cards where company_id is null returning rate_card_id"
    )
    await pool.execute(
        "insert into rate_card_rates (rate_card_id, rate_key, unit_price_nanos) values ($1, 'email', $2)",
        card_id,
        EMAIL_NANOS,
    )
    # A unit price so large that 10,000,000 emails do not fit a bigint (AMOUNT_OUT_OF_RANGE).
    huge = await stubs.new_company()
    card_id = await pool.fetchval(
        "insert into rate_cards (company_id, version, effective_from) values ($1, 1, '2001-01-01') "
        "returning rate_card_id",
        huge,
    )
    await pool.execute(
        "insert into rate_card_rates (rate_card_id, rate_key, unit_price_nanos)"
        " values ($1, 'email', 1000000000000)",
        card_id,
    )
    await credit(stubs, company, FUNDS_NANOS)
    hold = await _hold(stubs, company, "hold-1")
    released = await _hold(stubs, company, "hold-2")
    await stubs.wallet.ReleaseHold(
        wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=released)
    )
    await stubs.usage.RecordUsage(email(company, "before", 2))

    items = [
        email(company, "a", 1),  # 0 recorded
        email(company, "a", 1),  # 1 replay of 0 in the same batch
        email(company, "a", 5),  # 2 the same key, another body: reused
        email(company, "before", 2),  # 3 replay of a record from before the batch
        email(company, "before", 3),  # 4 reused against a record from before the batch
        email("no-such-company", "x"),  # 5 NOT_FOUND
        email("bad company!", "x"),  # 6 INVALID_ARGUMENT company_id
        email(company, "", 1),  # 7 INVALID_ARGUMENT idempotency_key
        email(company, "h1", 1, hold_id=hold),  # 8 captures the hold
        email(company, "h2", 1, hold_id=hold),  # 9 HOLD_ALREADY_CAPTURED (by 8)
        email(company, "h3", 1, hold_id=str(uuid.uuid4())),  # 10 HOLD_NOT_FOUND
        email(company, "h4", 1, hold_id=released),  # 11 HOLD_RELEASED
        email(other, "a", 3),  # 12 another company's own key "a": recorded
        sms(company, "s"),  # 13 NO_RATE_CARD
        email(huge, "big", 10_000_000),  # 14 AMOUNT_OUT_OF_RANGE
        email(company, "b", 4),  # 15 recorded, after everything above
    ]
    reply = await stubs.usage.RecordUsageBatch(usage_service_pb2.RecordUsageBatchRequest(items=items))
    results = list(reply.results)
    assert len(results) == len(items)
    kinds = [r.WhichOneof("result") for r in results]
    assert kinds == [
        "recorded", "recorded", "error", "recorded", "error", "error", "error", "error",
        "recorded", "error", "error", "error", "recorded", "error", "error", "recorded",
    ]  # fmt: skip

    first = results[0].recorded
    assert not first.replayed
    assert results[1].recorded.replayed and results[1].recorded.usage_record.id == first.usage_record.id
    assert results[3].recorded.replayed
    assert results[8].recorded.usage_record.price.billable_units == 1
    errors = {i: rich_status(r.error) for i, r in enumerate(results) if r.WhichOneof("result") == "error"}
    assert {i: (e.code, e.reason) for i, e in errors.items()} == {
        2: (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"),
        4: (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"),
        5: (grpc.StatusCode.NOT_FOUND, "COMPANY_NOT_FOUND"),
        6: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        7: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        9: (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_ALREADY_CAPTURED"),
        10: (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND"),
        11: (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED"),
        13: (grpc.StatusCode.FAILED_PRECONDITION, "NO_RATE_CARD"),
        14: (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE"),
    }
    assert set(errors[6].fields) == {"company_id"}
    assert set(errors[7].fields) == {"idempotency_key"}
    # The same request as a unary call now fails with exactly the same status (the state is the same:
    # the batch is over).
    for i in (2, 4, 5, 6, 7, 9, 10, 11, 13, 14):
        assert await _unary_error(stubs, items[i]) == errors[i], i

    # The wallet moved by the recorded items only, in item order, one ledger entry each.
    recorded = [results[i].recorded for i in (0, 8, 15)]
    balances = [nanos_of(r.balance_after) for r in recorded]
    before = FUNDS_NANOS - 2 * EMAIL_NANOS
    assert balances == [before - EMAIL_NANOS, before - 2 * EMAIL_NANOS, before - 6 * EMAIL_NANOS]
    sequences = [
        await pool.fetchval(
            "select ledger_sequence from usage_records where usage_record_id = $1",
            uuid.UUID(r.usage_record.id),
        )
        for r in recorded
    ]
    assert sequences == [3, 4, 5]  # after the credit and the record from before
    assert await pool.fetchval("select state from holds where hold_id = $1", uuid.UUID(hold)) == "captured"
    assert nanos_of(results[12].recorded.balance_after) == -3 * EMAIL_NANOS
    # Replaying the whole batch changes nothing: every recorded item comes back as a replay.
    again = await stubs.usage.RecordUsageBatch(usage_service_pb2.RecordUsageBatchRequest(items=items))
    for i in (0, 1, 3, 8, 12, 15):
        assert again.results[i].recorded.replayed
        assert again.results[i].recorded.usage_record.id == results[i].recorded.usage_record.id
    assert await pool.fetchval("select count(*) from usage_records") == 5


@pytest.mark.parametrize("count", [0, 1001])
async def test_an_empty_or_oversized_batch_is_invalid_argument(stubs: Stubs, count: int) -> None:
    company = await stubs.new_company()
    items = [email(company, f"k{i}") for i in range(count)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsageBatch(usage_service_pb2.RecordUsageBatchRequest(items=items))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "items" in error.fields
    assert f"has {count} usages" in error.fields["items"]


async def test_a_batch_of_1000_on_one_wallet_chains_its_ledger(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    items = [email(company, f"k{i}", count=1 + i % 3) for i in range(1000)]
    reply = await stubs.usage.RecordUsageBatch(usage_service_pb2.RecordUsageBatchRequest(items=items))
    balances = [nanos_of(r.recorded.balance_after) for r in reply.results]
    expected, running = [], 0
    for i in range(1000):
        running -= (1 + i % 3) * EMAIL_NANOS
        expected.append(running)
    assert balances == expected
    rows = await pool.fetch(
        "select sequence, created_at from ledger_entries where company_id = $1 order by sequence", company
    )
    assert [r["sequence"] for r in rows] == list(range(1, 1001))
    times = [r["created_at"] for r in rows]
    assert times == sorted(times)  # the ledger-time rule holds for a run written in one statement
    rollup = await pool.fetchrow(
        "select sum(record_count) as n, sum(amount_nanos) as amount from usage_rollups where company_id = $1",
        company,
    )
    assert (rollup["n"], rollup["amount"]) == (1000, -running)
