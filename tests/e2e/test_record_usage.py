"""RecordUsage end to end: a real server on port 0, called through the client library (clients/), as other
services call it. The tests that check wire details (rich error payloads, malformed requests the client
would never build) use the generated stubs directly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.client import AsyncBillingClient, IdempotencyKeyReused, NotFound
from consofta.billing.v1 import usage_pb2, usage_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.wire.money import nanos_of
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
            call=usage_pb2.CallUsage(
                direction=direction,  # type: ignore[arg-type]  # raw ints on purpose: bad values too
                number_type=number_type,  # type: ignore[arg-type]
                duration_seconds=seconds,
            )
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
        usage=usage_pb2.Usage(
            sms=usage_pb2.SmsUsage(direction=direction, body=body, segments=segments)  # type: ignore[arg-type]
        ),
    )


async def balance_nanos(billing: AsyncBillingClient, company: str) -> int:
    return nanos_of((await billing.get_wallet(company)).wallet.balance)


async def test_each_usage_type_debits_its_seed_price(stubs: Stubs, billing: AsyncBillingClient) -> None:
    company = await stubs.new_company()
    Record = Callable[[], Awaitable[usage_service_pb2.RecordUsageResponse]]
    cases: list[tuple[Record, int, int]] = [
        (lambda: billing.record_email(company, 1000), 1000, usd(0, 675_000_000)),
        (lambda: billing.record_call(company, "outbound", "local", 61), 2, usd(0, 28_000_000)),
        (lambda: billing.record_call(company, "outbound", "toll_free", 60), 1, usd(0, 14_000_000)),
        (lambda: billing.record_call(company, "inbound", "local", 3600), 60, usd(0, 510_000_000)),
        (lambda: billing.record_call(company, "inbound", "toll_free", 1), 1, usd(0, 22_000_000)),
        (lambda: billing.record_call(company, "inbound", "toll_free", 0), 0, 0),
        (lambda: billing.record_sms(company, "outbound", body="x" * 161), 2, usd(0, 15_800_000)),
        (lambda: billing.record_sms(company, "inbound", segments=3), 3, usd(0, 23_700_000)),
    ]
    expected_balance = 0
    for sequence, (record, units, amount) in enumerate(cases, start=1):
        reply = await record()
        expected_balance -= amount
        assert reply.usage_record.price.billable_units == units
        assert nanos_of(reply.usage_record.price.amount) == amount
        assert nanos_of(reply.balance_after) == expected_balance
        assert reply.usage_record.ledger_sequence == sequence
        assert reply.usage_record.price.rate_card == "default"
        assert reply.usage_record.price.rate_card_version == 1
        assert not reply.replayed
    assert await balance_nanos(billing, company) == expected_balance


async def test_sms_body_reports_its_encoding_and_is_not_echoed(
    stubs: Stubs, billing: AsyncBillingClient
) -> None:
    company = await stubs.new_company()
    reply = await billing.record_sms(company, "outbound", body="Привет")
    assert reply.usage_record.price.sms_encoding == usage_pb2.SMS_ENCODING_UCS2
    assert not reply.usage_record.usage.sms.HasField("body")
    assert reply.usage_record.usage.sms.segments == 1


async def test_same_key_same_request_replays_without_a_second_debit(
    stubs: Stubs, billing: AsyncBillingClient
) -> None:
    company = await stubs.new_company()
    first = await billing.record_email(company, 10, idempotency_key="k")
    again = await billing.record_email(company, 10, idempotency_key="k")
    assert again.replayed and not first.replayed
    assert again.usage_record == first.usage_record
    assert again.balance_after == first.balance_after
    assert await balance_nanos(billing, company) == -usd(0, 6_750_000)


async def test_same_key_other_request_is_already_exists_and_changes_nothing(
    stubs: Stubs, billing: AsyncBillingClient
) -> None:
    company = await stubs.new_company()
    await billing.record_email(company, 10, idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        await billing.record_email(company, 11, idempotency_key="k")
    # On the wire: ALREADY_EXISTS with an ErrorInfo, which is what the client decoded.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(email(company, "k", 12))
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert await balance_nanos(billing, company) == -usd(0, 6_750_000)


async def test_keys_are_scoped_per_company(stubs: Stubs, billing: AsyncBillingClient) -> None:
    a, b = await stubs.new_company(), await stubs.new_company()
    await billing.record_email(a, 1, idempotency_key="shared-key")
    reply = await billing.record_email(b, 2, idempotency_key="shared-key")
    assert not reply.replayed
    assert await balance_nanos(billing, b) == -usd(0, 1_350_000)


async def test_unknown_company_is_not_found(billing: AsyncBillingClient) -> None:
    with pytest.raises(NotFound) as caught:
        await billing.record_email("no-such-company", 1)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == "COMPANY_NOT_FOUND"


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


async def test_bad_input_is_invalid_argument_naming_the_field(
    stubs: Stubs, billing: AsyncBillingClient
) -> None:
    company = await stubs.new_company()
    for label, request, field in _bad_requests(company):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.usage.RecordUsage(request)
        error = rich_error(caught.value)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, label
        assert field in error.fields, (label, error.fields)
    assert await balance_nanos(billing, company) == 0


async def test_500_calls_from_50_clients_debit_exactly(
    stubs: Stubs, billing: AsyncBillingClient, app: BillingServer, db_url: str
) -> None:
    """Concurrent debits on one hot wallet lose nothing and leave a continuous ledger."""
    company = await stubs.new_company()
    # 50 clients, each with its own channel (its own HTTP/2 connection), as 50 services would be.
    clients = [AsyncBillingClient(f"127.0.0.1:{app.port}") for _ in range(50)]
    try:

        async def client(n: int) -> int:
            total = 0
            for i in range(10):
                seconds = n * 10 + i  # 0..499 seconds, every price different
                reply = await clients[n].record_call(company, "inbound", "toll_free", seconds)
                total += nanos_of(reply.usage_record.price.amount)
            return total

        totals = await asyncio.gather(*(client(n) for n in range(50)))
    finally:
        for opened in clients:
            await opened.close()
    expected = sum(-(-s // 60) * 22_000_000 for s in range(500))
    assert sum(totals) == expected
    assert await balance_nanos(billing, company) == -expected
    conn = await asyncpg.connect(db_url)
    try:
        sequences = await conn.fetch(
            "select sequence from ledger_entries where company_id = $1 order by sequence", company
        )
    finally:
        await conn.close()
    assert [r["sequence"] for r in sequences] == list(range(1, 501))


async def test_50_identical_concurrent_calls_debit_once(stubs: Stubs, billing: AsyncBillingClient) -> None:
    company = await stubs.new_company()
    replies = await asyncio.gather(
        *(billing.record_email(company, 7, idempotency_key="same") for _ in range(50))
    )
    assert sum(not r.replayed for r in replies) == 1
    assert len({r.usage_record.id for r in replies}) == 1
    assert await balance_nanos(billing, company) == -7 * 675_000


async def test_below_minimum_is_reported(stubs: Stubs, billing: AsyncBillingClient, db_url: str) -> None:
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
    reply = await billing.record_email(company, 1)
    assert reply.below_minimum  # 0 minimum, balance now negative


async def test_occurred_at_is_kept(stubs: Stubs, billing: AsyncBillingClient) -> None:
    company = await stubs.new_company()
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    reply = await billing.record_email(company, 1, occurred_at=when)
    assert reply.usage_record.occurred_at.ToDatetime(tzinfo=UTC) == when
