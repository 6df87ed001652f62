"""RecordUsage end to end: a real server on port 0, called through the generated stubs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import usage_pb2, usage_service_pb2, usage_service_pb2_grpc, wallet_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.convert import nanos_of
from service.domain.money import usd
from service.server import BillingServer
from tests.conftest import Stubs
from tests.support.rpc import rich_error


def email(company: str, key: str, count: int = 1) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count)),
    )


def call(
    company: str, key: str, direction: int, number_type: int, seconds: int
) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(
            call=usage_pb2.CallUsage(direction=direction, number_type=number_type, duration_seconds=seconds)
        ),
    )


def sms(
    company: str,
    key: str,
    *,
    body: str | None = None,
    segments: int | None = None,
    direction: int = usage_pb2.SMS_DIRECTION_OUTBOUND,
) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(sms=usage_pb2.SmsUsage(direction=direction, body=body, segments=segments)),
    )


async def balance_nanos(stubs: Stubs, company: str) -> int:
    reply = await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
    return nanos_of(reply.wallet.balance)


async def test_each_usage_type_debits_its_seed_price(stubs: Stubs) -> None:
    company = await stubs.new_company()
    cases = [
        (email(company, "e1", 1000), 1000, usd(0, 675_000_000)),
        (
            call(company, "c1", usage_pb2.CALL_DIRECTION_OUTBOUND, usage_pb2.NUMBER_TYPE_LOCAL, 61),
            2,
            usd(0, 28_000_000),
        ),
        (
            call(company, "c2", usage_pb2.CALL_DIRECTION_OUTBOUND, usage_pb2.NUMBER_TYPE_TOLL_FREE, 60),
            1,
            usd(0, 14_000_000),
        ),
        (
            call(company, "c3", usage_pb2.CALL_DIRECTION_INBOUND, usage_pb2.NUMBER_TYPE_LOCAL, 3600),
            60,
            usd(0, 510_000_000),
        ),
        (
            call(company, "c4", usage_pb2.CALL_DIRECTION_INBOUND, usage_pb2.NUMBER_TYPE_TOLL_FREE, 1),
            1,
            usd(0, 22_000_000),
        ),
        (call(company, "c5", usage_pb2.CALL_DIRECTION_INBOUND, usage_pb2.NUMBER_TYPE_TOLL_FREE, 0), 0, 0),
        (sms(company, "s1", body="x" * 161), 2, usd(0, 15_800_000)),
        (sms(company, "s2", segments=3, direction=usage_pb2.SMS_DIRECTION_INBOUND), 3, usd(0, 23_700_000)),
    ]
    expected_balance = 0
    for sequence, (request, units, amount) in enumerate(cases, start=1):
        reply = await stubs.usage.RecordUsage(request)
        expected_balance -= amount
        assert reply.usage_record.price.billable_units == units
        assert nanos_of(reply.usage_record.price.amount) == amount
        assert nanos_of(reply.balance_after) == expected_balance
        assert reply.usage_record.ledger_sequence == sequence
        assert reply.usage_record.price.rate_card == "default"
        assert reply.usage_record.price.rate_card_version == 1
        assert not reply.replayed
    assert await balance_nanos(stubs, company) == expected_balance


async def test_sms_body_reports_its_encoding_and_is_not_echoed(stubs: Stubs) -> None:
    company = await stubs.new_company()
    reply = await stubs.usage.RecordUsage(sms(company, "s", body="Привет"))
    assert reply.usage_record.price.sms_encoding == usage_pb2.SMS_ENCODING_UCS2
    assert not reply.usage_record.usage.sms.HasField("body")
    assert reply.usage_record.usage.sms.segments == 1


async def test_same_key_same_request_replays_without_a_second_debit(stubs: Stubs) -> None:
    company = await stubs.new_company()
    first = await stubs.usage.RecordUsage(email(company, "k", 10))
    again = await stubs.usage.RecordUsage(email(company, "k", 10))
    assert again.replayed and not first.replayed
    assert again.usage_record == first.usage_record
    assert again.balance_after == first.balance_after
    assert await balance_nanos(stubs, company) == -usd(0, 6_750_000)


async def test_same_key_other_request_is_already_exists_and_changes_nothing(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await stubs.usage.RecordUsage(email(company, "k", 10))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(email(company, "k", 11))
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert await balance_nanos(stubs, company) == -usd(0, 6_750_000)


async def test_keys_are_scoped_per_company(stubs: Stubs) -> None:
    a, b = await stubs.new_company(), await stubs.new_company()
    await stubs.usage.RecordUsage(email(a, "shared-key", 1))
    reply = await stubs.usage.RecordUsage(email(b, "shared-key", 2))
    assert not reply.replayed
    assert await balance_nanos(stubs, b) == -usd(0, 1_350_000)


async def test_unknown_company_is_not_found(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(email("no-such-company", "k"))
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.reason == "COMPANY_NOT_FOUND"


def _bad_requests(company: str) -> list[tuple[str, usage_service_pb2.RecordUsageRequest, str]]:
    future = Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    with_future = email(company, "k-future")
    with_future.occurred_at.CopyFrom(future)
    return [
        ("missing key", email(company, ""), "idempotency_key"),
        ("oversized key", email(company, "k" * 256), "idempotency_key"),
        ("non-ascii key", email(company, "ключ"), "idempotency_key"),
        ("missing company", email("", "k"), "company_id"),
        ("malformed company", email(company + "/../x", "k"), "company_id"),
        ("negative count", email(company, "k", -1), "usage.email.count"),
        ("zero count", email(company, "k", 0), "usage.email.count"),
        ("absurd count", email(company, "k", 10**12), "usage.email.count"),
        (
            "negative duration",
            call(company, "k", usage_pb2.CALL_DIRECTION_INBOUND, usage_pb2.NUMBER_TYPE_LOCAL, -5),
            "usage.call.duration_seconds",
        ),
        ("unset direction", call(company, "k", 0, usage_pb2.NUMBER_TYPE_LOCAL, 5), "usage.call.direction"),
        (
            "unknown enum value",
            call(company, "k", usage_pb2.CALL_DIRECTION_INBOUND, 42, 5),
            "usage.call.number_type",
        ),
        ("no usage", usage_service_pb2.RecordUsageRequest(company_id=company, idempotency_key="k"), "usage"),
        (
            "two usages",
            usage_service_pb2.RecordUsageRequest(
                company_id=company,
                idempotency_key="k",
                usage=usage_pb2.Usage(
                    email=usage_pb2.EmailUsage(count=1), sms=usage_pb2.SmsUsage(segments=1)
                ),
            ),
            "usage",
        ),
        ("body and segments", sms(company, "k", body="hi", segments=1), "usage.sms"),
        ("neither body nor segments", sms(company, "k"), "usage.sms"),
        ("body over 1600 characters", sms(company, "k", body="a" * 1601), "usage.sms.body"),
        ("zero segments", sms(company, "k", segments=0), "usage.sms.segments"),
        ("occurred in the future", with_future, "occurred_at"),
    ]


async def test_bad_input_is_invalid_argument_naming_the_field(stubs: Stubs) -> None:
    company = await stubs.new_company()
    for label, request, field in _bad_requests(company):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.usage.RecordUsage(request)
        error = rich_error(caught.value)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, label
        assert field in error.fields, (label, error.fields)
    assert await balance_nanos(stubs, company) == 0


async def test_500_calls_from_50_clients_debit_exactly(stubs: Stubs, app: BillingServer, db_url: str) -> None:
    """Concurrent debits on one hot wallet lose nothing and leave a continuous ledger."""
    company = await stubs.new_company()
    # 50 clients, each with its own channel (its own HTTP/2 connection), as 50 services would be.
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") for _ in range(50)]
    try:
        clients = [usage_service_pb2_grpc.UsageServiceStub(ch) for ch in channels]

        async def client(n: int) -> int:
            total = 0
            for i in range(10):
                seconds = n * 10 + i  # 0..499 seconds, every price different
                reply = await clients[n].RecordUsage(
                    call(
                        company,
                        f"c{n}-{i}",
                        usage_pb2.CALL_DIRECTION_INBOUND,
                        usage_pb2.NUMBER_TYPE_TOLL_FREE,
                        seconds,
                    )
                )
                total += nanos_of(reply.usage_record.price.amount)
            return total

        totals = await asyncio.gather(*(client(n) for n in range(50)))
    finally:
        for ch in channels:
            await ch.close()
    expected = sum(-(-s // 60) * 22_000_000 for s in range(500))
    assert sum(totals) == expected
    assert await balance_nanos(stubs, company) == -expected
    conn = await asyncpg.connect(db_url)
    try:
        sequences = await conn.fetch(
            "select sequence from ledger_entries where company_id = $1 order by sequence", company
        )
    finally:
        await conn.close()
    assert [r["sequence"] for r in sequences] == list(range(1, 501))


async def test_50_identical_concurrent_calls_debit_once(stubs: Stubs) -> None:
    company = await stubs.new_company()
    replies = await asyncio.gather(*(stubs.usage.RecordUsage(email(company, "same", 7)) for _ in range(50)))
    assert sum(not r.replayed for r in replies) == 1
    assert len({r.usage_record.id for r in replies}) == 1
    assert await balance_nanos(stubs, company) == -7 * 675_000


async def test_below_minimum_is_reported(stubs: Stubs, db_url: str) -> None:
    company = await stubs.new_company()
    conn = await asyncpg.connect(db_url)
    try:
        # Settings come in a later issue; set the minimum directly for now.
        await conn.execute(
            "update wallets set minimum_balance_nanos = 0, balance_nanos = balance_nanos "
            "where company_id = $1",
            company,
        )
    finally:
        await conn.close()
    reply = await stubs.usage.RecordUsage(email(company, "k", 1))
    assert reply.below_minimum  # 0 minimum, balance now negative


async def test_occurred_at_is_kept(stubs: Stubs) -> None:
    company = await stubs.new_company()
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    request = email(company, "k")
    request.occurred_at.FromDatetime(when)
    reply = await stubs.usage.RecordUsage(request)
    assert reply.usage_record.occurred_at.ToDatetime(tzinfo=UTC) == when
