"""A summary or statement request that names no period is about the current month, so a newcomer's
first calls show the usage they just recorded."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from consofta.billing.v1 import reporting_pb2, usage_pb2, usage_service_pb2

from service.api.wire.money import nanos_of
from service.api.wire.timestamps import timestamp
from service.domain.periods import current_month
from tests.conftest import Stubs

ZONE = "Pacific/Auckland"  # far from UTC, so that "this month" in the zone is not UTC's by accident


async def _emails(stubs: Stubs, company: str, key: str, count: int, occurred_at: datetime) -> None:
    await stubs.usage.RecordUsage(
        usage_service_pb2.RecordUsageRequest(
            company_id=company,
            idempotency_key=key,
            usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count)),
            occurred_at=timestamp(occurred_at),
        )
    )


async def test_no_range_is_this_month_so_far_and_no_year_month_is_this_month(stubs: Stubs) -> None:
    company = await stubs.new_company()
    now = datetime.now(UTC)
    this_month = current_month(now, zoneinfo.ZoneInfo(ZONE))
    await _emails(stubs, company, "now", 1000, now)
    await _emails(stubs, company, "forty-days-ago", 7, now - timedelta(days=40))  # an earlier month

    summary = await stubs.usage.GetUsageSummary(
        reporting_pb2.GetUsageSummaryRequest(
            company_id=company, grouping=reporting_pb2.SUMMARY_GROUPING_MONTH, time_zone=ZONE
        )
    )
    statement = await stubs.wallet.GetStatement(
        reporting_pb2.GetStatementRequest(company_id=company, time_zone=ZONE)
    )
    if current_month(datetime.now(UTC), zoneinfo.ZoneInfo(ZONE)) != this_month:
        pytest.skip("the month changed while the test ran")
    assert [p.label for p in summary.periods] == [f"{this_month[0]:04d}-{this_month[1]:02d}"]
    assert [(t.record_count, t.quantity) for t in summary.totals] == [(1, 1000)]
    assert nanos_of(summary.amount) == 675_000_000
    assert (statement.statement.year, statement.statement.month) == this_month
    # The statement follows posting time: both debits were posted just now, whenever they occurred.
    assert nanos_of(statement.statement.closing_balance) == -(675_000_000 + 7 * 675_000)


async def test_half_a_range_is_still_refused(stubs: Stubs) -> None:
    company = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.usage.GetUsageSummary(
            reporting_pb2.GetUsageSummaryRequest(
                company_id=company,
                start_time=timestamp(datetime.now(UTC) - timedelta(days=1)),
                grouping=reporting_pb2.SUMMARY_GROUPING_DAY,
                time_zone="UTC",
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "end_time: is required" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.wallet.GetStatement(
            reporting_pb2.GetStatementRequest(company_id=company, month=3, time_zone="UTC")
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "year: must be between" in (refused.value.details() or "")
