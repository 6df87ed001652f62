"""ListUsageRecords: complete records, filters, and pages that stay stable while usage is recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import reporting_pb2, usage_pb2, usage_service_pb2

from service.api.wire.money import nanos_of
from service.api.wire.timestamps import timestamp
from tests.conftest import Stubs
from tests.support.rpc import rich_error

CALL, SMS, EMAIL = usage_pb2.USAGE_TYPE_CALL, usage_pb2.USAGE_TYPE_SMS, usage_pb2.USAGE_TYPE_EMAIL


def record_request(
    company: str, key: str, usage: usage_pb2.Usage, at: datetime
) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company, idempotency_key=key, usage=usage, occurred_at=timestamp(at)
    )


CALL_OUT, CALL_IN = usage_pb2.CALL_DIRECTION_OUTBOUND, usage_pb2.CALL_DIRECTION_INBOUND
LOCAL, TOLL_FREE = usage_pb2.NUMBER_TYPE_LOCAL, usage_pb2.NUMBER_TYPE_TOLL_FREE
SMS_OUT, SMS_IN = usage_pb2.SMS_DIRECTION_OUTBOUND, usage_pb2.SMS_DIRECTION_INBOUND

KINDS = [
    usage_pb2.Usage(email=usage_pb2.EmailUsage(count=10)),
    usage_pb2.Usage(call=usage_pb2.CallUsage(direction=CALL_OUT, number_type=LOCAL, duration_seconds=61)),
    usage_pb2.Usage(call=usage_pb2.CallUsage(direction=CALL_OUT, number_type=TOLL_FREE, duration_seconds=5)),
    usage_pb2.Usage(call=usage_pb2.CallUsage(direction=CALL_IN, number_type=LOCAL, duration_seconds=120)),
    usage_pb2.Usage(call=usage_pb2.CallUsage(direction=CALL_IN, number_type=TOLL_FREE, duration_seconds=59)),
    usage_pb2.Usage(sms=usage_pb2.SmsUsage(direction=SMS_OUT, body="hello")),
    usage_pb2.Usage(sms=usage_pb2.SmsUsage(direction=SMS_IN, segments=2)),
]


async def list_all(
    stubs: Stubs, request: reporting_pb2.ListUsageRecordsRequest
) -> list[usage_pb2.UsageRecord]:
    records: list[usage_pb2.UsageRecord] = []
    while True:
        reply = await stubs.usage.ListUsageRecords(request)
        records.extend(reply.usage_records)
        if not reply.next_page_token:
            return records
        request.page_token = reply.next_page_token


async def test_records_carry_everything_and_filters_select_by_category_and_time(stubs: Stubs) -> None:
    company = await stubs.new_company()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    recorded = {}
    for i in range(21):
        reply = await stubs.usage.RecordUsage(
            record_request(company, f"k{i}", KINDS[i % 7], base + timedelta(hours=i))
        )
        recorded[reply.usage_record.id] = reply.usage_record

    listed = await list_all(stubs, reporting_pb2.ListUsageRecordsRequest(company_id=company, page_size=4))
    assert [r.id for r in listed] == [
        r.id for r in sorted(recorded.values(), key=lambda r: r.occurred_at.ToDatetime(), reverse=True)
    ]
    for record in listed:
        assert record == recorded[record.id]  # usage, price, rate card version, key, times, ledger sequence
        assert record.ledger_sequence > 0 and record.idempotency_key.startswith("k")
        assert nanos_of(record.price.amount) == record.price.billable_units * nanos_of(
            record.price.unit_price
        )

    async def ids(*categories: usage_pb2.UsageCategory, **bounds: datetime) -> set[str]:
        request = reporting_pb2.ListUsageRecordsRequest(
            company_id=company,
            categories=categories,
            **{k: timestamp(v) for k, v in bounds.items()},  # type: ignore[arg-type]
        )
        return {r.id for r in await list_all(stubs, request)}

    def where(predicate: object) -> set[str]:
        return {r.id for r in recorded.values() if predicate(r)}  # type: ignore[operator]

    assert await ids(usage_pb2.UsageCategory(usage_type=EMAIL)) == where(lambda r: r.usage.HasField("email"))
    inbound_calls = usage_pb2.UsageCategory(usage_type=CALL, call_direction=usage_pb2.CALL_DIRECTION_INBOUND)
    assert await ids(inbound_calls) == where(lambda r: r.usage.call.direction == 2)
    toll_free = usage_pb2.UsageCategory(usage_type=CALL, number_type=usage_pb2.NUMBER_TYPE_TOLL_FREE)
    assert await ids(toll_free) == where(lambda r: r.usage.call.number_type == 2)
    sms_in = usage_pb2.UsageCategory(usage_type=SMS, sms_direction=usage_pb2.SMS_DIRECTION_INBOUND)
    assert await ids(sms_in, toll_free) == where(
        lambda r: r.usage.sms.direction == 2 or r.usage.call.number_type == 2
    )
    lo, hi = base + timedelta(hours=5), base + timedelta(hours=9)
    assert await ids(occurred_after=lo, occurred_before=hi) == where(
        lambda r: lo <= r.occurred_at.ToDatetime(tzinfo=UTC) < hi
    )
    assert len(where(lambda r: lo <= r.occurred_at.ToDatetime(tzinfo=UTC) < hi)) == 4


async def test_pages_stay_stable_while_usage_is_recorded_concurrently(stubs: Stubs) -> None:
    """Records recorded while a caller pages (some sorting before, some after its position) never shift a
    page: every record that existed at the first page is listed exactly once, and no later one appears."""
    company = await stubs.new_company()
    base = datetime.now(UTC) - timedelta(days=30)
    before = set()
    for i in range(60):
        reply = await stubs.usage.RecordUsage(
            record_request(company, f"a{i}", KINDS[i % 7], base + timedelta(hours=i))
        )
        before.add(reply.usage_record.id)

    stop = asyncio.Event()

    async def writer(n: int) -> int:
        written = 0
        while not stop.is_set():
            # Spread over the whole range, so they land on pages already served and pages still to come.
            at = base + timedelta(hours=(written * 7 + n * 13) % 60, minutes=30)
            await stubs.usage.RecordUsage(record_request(company, f"w{n}-{written}", KINDS[written % 7], at))
            written += 1
        return written

    request = reporting_pb2.ListUsageRecordsRequest(company_id=company, page_size=5)
    seen: list[str] = []
    writers: list[asyncio.Task[int]] = []
    while True:
        page = await stubs.usage.ListUsageRecords(request)
        seen.extend(r.id for r in page.usage_records)
        if not writers:
            # Started only once the first page fixed the listing's snapshot: a record written before that
            # page belongs in the listing, and the test could not tell which ones those were.
            writers = [asyncio.create_task(writer(n)) for n in range(4)]
        await asyncio.sleep(0.01)  # let the writers get records in between the pages
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    stop.set()
    written = sum(await asyncio.gather(*writers))
    assert written > 10, "the writers did not overlap the paging"
    assert len(seen) == len(set(seen)) == 60
    assert set(seen) == before
    fresh = await list_all(stubs, reporting_pb2.ListUsageRecordsRequest(company_id=company, page_size=1000))
    assert len(fresh) == 60 + written


async def test_a_token_only_works_with_its_own_filters(stubs: Stubs) -> None:
    company = await stubs.new_company()
    for i in range(3):
        await stubs.usage.RecordUsage(
            record_request(company, f"k{i}", KINDS[0], datetime.now(UTC) - timedelta(hours=i))
        )
    first = await stubs.usage.ListUsageRecords(
        reporting_pb2.ListUsageRecordsRequest(company_id=company, page_size=1)
    )
    for bad in (
        reporting_pb2.ListUsageRecordsRequest(
            company_id=company,
            page_token=first.next_page_token,
            categories=[usage_pb2.UsageCategory(usage_type=SMS)],
        ),
        reporting_pb2.ListUsageRecordsRequest(company_id=company, page_token="not-a-token"),
        reporting_pb2.ListUsageRecordsRequest(company_id=company, page_size=-1),
        reporting_pb2.ListUsageRecordsRequest(
            company_id=company,
            categories=[usage_pb2.UsageCategory(usage_type=EMAIL, sms_direction=SMS_OUT)],
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.usage.ListUsageRecords(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rich_error(raised.value).fields


async def test_unknown_company_is_not_found(stubs: Stubs, conn: asyncpg.Connection) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.usage.ListUsageRecords(reporting_pb2.ListUsageRecordsRequest(company_id="nobody"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
