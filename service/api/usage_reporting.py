"""UsageService's reports: ListUsageRecords, GetUsageSummary, GetRateCard and EstimateCost.

grpc registers one servicer per service, so these join UsageServicer as a mixin. Thin: validate, call
service/app/reporting, convert with service/api/wire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from consofta.billing.v1 import reporting_pb2
from grpc.aio import ServicerContext

from service.api.validation import (
    Violations,
    check_company_id,
    check_ordered,
    parse_moment,
    parse_time_zone,
)
from service.api.wire.enums import EnumTable
from service.api.wire.records import usage_record_message
from service.api.wire.reporting import applied_rate, estimate_response, summary_response
from service.api.wire.timestamps import timestamp
from service.api.wire.usage import parse_categories, parse_usage
from service.app.reporting.rates import estimate_cost, rate_card
from service.app.reporting.summaries import usage_summary
from service.app.reporting.usage_records import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    UsageRecordQuery,
    list_usage_records,
)
from service.domain.periods import Grouping, current_month, month_range, periods
from service.domain.usage_kinds import rate_keys_matching

MAX_SUMMARY_RANGE = timedelta(days=1100)
MAX_REPEAT_COUNT = 10_000_000

GROUPINGS: EnumTable[Grouping] = EnumTable(reporting_pb2.SummaryGrouping.DESCRIPTOR, list(Grouping))


class UsageReporting:
    _pool: asyncpg.Pool

    async def ListUsageRecords(
        self, request: reporting_pb2.ListUsageRecordsRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.ListUsageRecordsResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        if request.page_size < 0:
            v.add("page_size", "must not be negative")
        categories = parse_categories(v, request.categories)
        after = parse_moment(
            v, request.HasField("occurred_after"), request.occurred_after, "occurred_after", required=False
        )
        before = parse_moment(
            v, request.HasField("occurred_before"), request.occurred_before, "occurred_before", required=False
        )
        check_ordered(v, after, before, "occurred_after", "occurred_before")
        v.raise_if_any()
        page = await list_usage_records(
            self._pool,
            UsageRecordQuery(
                request.company_id,
                rate_keys_matching(categories) if categories else None,
                after,
                before,
                min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
                request.page_token,
            ),
        )
        return reporting_pb2.ListUsageRecordsResponse(
            usage_records=[usage_record_message(record) for record in page.records],
            next_page_token=page.next_page_token,
        )

    async def GetUsageSummary(
        self, request: reporting_pb2.GetUsageSummaryRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.GetUsageSummaryResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        # No range at all: the current month so far (in time_zone, once it is known to be valid).
        month_so_far = not request.HasField("start_time") and not request.HasField("end_time")
        start = parse_moment(
            v, request.HasField("start_time"), request.start_time, "start_time", required=not month_so_far
        )
        end = parse_moment(
            v, request.HasField("end_time"), request.end_time, "end_time", required=not month_so_far
        )
        check_ordered(v, start, end, "start_time", "end_time")
        if start is not None and end is not None and end - start > MAX_SUMMARY_RANGE:
            v.add("end_time", f"must be at most {MAX_SUMMARY_RANGE.days} days after start_time")
        grouping = GROUPINGS.domain(request.grouping)
        if grouping is None:
            v.add("grouping", f"must be {GROUPINGS.choices()}")
        zone = parse_time_zone(v, request.time_zone)
        v.raise_if_any()
        assert grouping is not None and zone is not None
        if month_so_far:
            now = datetime.now(UTC)
            start = month_range(*current_month(now, zone), zone)[0]
            end = now
        assert start is not None and end is not None
        summary = await usage_summary(self._pool, request.company_id, periods(start, end, zone, grouping))
        return summary_response(summary)

    async def GetRateCard(
        self, request: reporting_pb2.GetRateCardRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.GetRateCardResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        at = parse_moment(
            v, request.HasField("effective_at"), request.effective_at, "effective_at", required=False
        )
        v.raise_if_any()
        at = at or datetime.now(UTC)
        rates = await rate_card(self._pool, request.company_id, at)
        return reporting_pb2.GetRateCardResponse(
            effective_at=timestamp(at), rates=[applied_rate(r) for r in rates]
        )

    async def EstimateCost(
        self, request: reporting_pb2.EstimateCostRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.EstimateCostResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        usage = parse_usage(v, request.usage)
        if not 0 <= request.repeat_count <= MAX_REPEAT_COUNT:
            v.add("repeat_count", f"must be between 0 (meaning 1) and {MAX_REPEAT_COUNT:,}")
        at = parse_moment(
            v, request.HasField("effective_at"), request.effective_at, "effective_at", required=False
        )
        v.raise_if_any()
        assert usage is not None
        estimate = await estimate_cost(
            self._pool, request.company_id, usage, request.repeat_count or 1, at or datetime.now(UTC)
        )
        return estimate_response(estimate)
