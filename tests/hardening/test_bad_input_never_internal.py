"""Hostile or absurd input found in review: each is INVALID_ARGUMENT naming the field, never INTERNAL,
and leaves nothing behind that hurts the next caller."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import (
    reporting_pb2,
    settings_service_pb2,
    settings_service_pb2_grpc,
    usage_pb2,
    usage_service_pb2,
    wallet_service_pb2,
)
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.wire.money import money
from service.app import page_tokens
from service.app.credits import credit_wallet
from service.app.events import parse_cursor
from service.app.reporting.usage_records import UsageRecordQuery
from service.app.transactions import TransactionQuery
from service.domain.errors import InvalidArgument
from tests.conftest import Stubs
from tests.support.rpc import rich_error


async def _invalid(call: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, error
    assert field in error.fields, error.fields


async def test_forged_page_tokens_with_values_out_of_range(stubs: Stubs) -> None:
    company = await stubs.new_company()
    transactions = page_tokens.encode(TransactionQuery(company).digest(), 10**30)
    await _invalid(
        stubs.wallet.ListWalletTransactions(
            wallet_service_pb2.ListWalletTransactionsRequest(company_id=company, page_token=transactions)
        ),
        "page_token",
    )
    digest = UsageRecordQuery(company, None, None, None, 10, "").digest()
    for forged in (
        page_tokens.encode(digest, 1, 0, "not-a-uuid"),
        page_tokens.encode(digest, 1, 10**20, "6f1d1b5e-7c4c-4a55-9f5e-0d6f3c2b1a00"),
        page_tokens.encode(digest, 10**30, 0, "6f1d1b5e-7c4c-4a55-9f5e-0d6f3c2b1a00"),
    ):
        await _invalid(
            stubs.usage.ListUsageRecords(
                reporting_pb2.ListUsageRecordsRequest(company_id=company, page_token=forged)
            ),
            "page_token",
        )


async def test_refused_requests_leave_pooled_connections_clean(stubs: Stubs) -> None:
    """A request refused halfway must not leave a transaction open on a pooled connection, where the next
    caller (a statement, which sets its isolation level first) would trip over it."""
    company = await stubs.new_company()
    digest = UsageRecordQuery(company, None, None, None, 10, "").digest()
    forged = page_tokens.encode(digest, 1, 0, "not-a-uuid")
    for _ in range(25):
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.usage.ListUsageRecords(
                reporting_pb2.ListUsageRecordsRequest(company_id=company, page_token=forged)
            )
    # Two at a time, the server's limit for concurrent statements; the pool hands out each connection in turn.
    request = reporting_pb2.GetStatementRequest(company_id=company, year=2026, month=1, time_zone="UTC")
    statements: list[reporting_pb2.GetStatementResponse] = []
    for _ in range(13):
        statements += await asyncio.gather(
            stubs.wallet.GetStatement(request), stubs.wallet.GetStatement(request)
        )
    assert len(statements) == 26


def test_event_cursors_with_values_out_of_range_are_refused() -> None:
    for raw, company in (
        (f"c1:{10**30}:acme", "acme"),
        (f"a1:{10**30}:None:0", None),
        ("a1:0:None:-1", None),
    ):
        forged = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        with pytest.raises(InvalidArgument) as caught:
            parse_cursor(forged, company)
        assert caught.value.violations[0].field == "cursor"


async def test_summary_far_in_the_past_is_invalid_argument(stubs: Stubs) -> None:
    company = await stubs.new_company()
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(datetime(1, 1, 1, tzinfo=UTC))
    end.FromDatetime(datetime(1, 1, 2, tzinfo=UTC))
    await _invalid(
        stubs.usage.GetUsageSummary(
            reporting_pb2.GetUsageSummaryRequest(
                company_id=company,
                start_time=start,
                end_time=end,
                grouping=reporting_pb2.SUMMARY_GROUPING_DAY,
                time_zone="America/New_York",
            )
        ),
        "start_time",
    )


async def test_an_amount_past_64_bits_is_refused_and_records_nothing(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    # The largest unit price a card may hold, times the largest email batch, does not fit a bigint.
    card_id = await pool.fetchval(
        "insert into rate_cards (company_id, version, effective_from) values ($1, 1, '2001-01-01') "
        "returning rate_card_id",
        company,
    )
    await pool.execute(
        "insert into rate_card_rates (rate_card_id, rate_key, unit_price_nanos)"
        " values ($1, 'email', 1000000000000)",
        card_id,
    )
    request = usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key="huge",
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=10_000_000)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(request)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_OUT_OF_RANGE")
    assert "usage" in error.fields
    assert await pool.fetchval("select count(*) from usage_records where company_id = $1", company) == 0


async def test_a_credit_actor_with_control_characters_is_refused(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    with pytest.raises(InvalidArgument) as caught:
        await credit_wallet(pool, company, 1_000_000_000, "goodwill", "req-1", actor="a\x00b")
    assert [v.field for v in caught.value.violations] == ["actor"]


async def test_a_settings_change_wakes_the_recharge_loop(stubs: Stubs, db_url: str) -> None:
    company = await stubs.new_company()
    listener = await asyncpg.connect(db_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("recharge_wanted", lambda *args: heard.put_nowait(str(args[3])))
        settings = settings_service_pb2_grpc.SettingsServiceStub(stubs.channel)
        await settings.UpdateBillingSettings(
            settings_service_pb2.UpdateBillingSettingsRequest(
                company_id=company,
                settings=settings_service_pb2.BillingSettings(minimum_balance=money(10_000_000_000)),
                update_mask=field_mask_pb2.FieldMask(paths=["minimum_balance"]),
                request_id="raise-minimum",
            )
        )
        assert await asyncio.wait_for(heard.get(), timeout=5) == company
    finally:
        await listener.close()
