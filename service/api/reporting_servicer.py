"""The dashboard's reporting RPCs, mixed into UsageServicer and WalletServicer.

grpc registers one servicer per service, so these methods join the existing servicer classes as mixins
rather than as servicers of their own; they stay thin: validate, call service/app/reporting, convert.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from consofta.billing.v1 import reporting_pb2, usage_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc.aio import ServicerContext

from service.api.convert import datetime_of, money, timestamp
from service.api.validation import Violations, check_company_id, parse_usage
from service.app.reporting.export import export_ledger
from service.app.reporting.rates import estimate_cost, rate_card
from service.app.reporting.statements import Statement, statement
from service.app.reporting.summaries import Sums, usage_summary
from service.app.reporting.usage_records import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    UsageRecordQuery,
    list_usage_records,
)
from service.domain.categories import CATEGORY_OF_RATE_KEY, UNIT_OF_USAGE_TYPE, Category, rate_keys_matching
from service.domain.periods import Grouping, periods, time_zone
from service.domain.pricing import RateKey
from service.domain.usage import Direction, NumberType, UsageType

MAX_SUMMARY_RANGE = timedelta(days=1100)
MAX_REPEAT_COUNT = 10_000_000

_USAGE_TYPES = {
    reporting_pb2.USAGE_TYPE_EMAIL: UsageType.EMAIL,
    reporting_pb2.USAGE_TYPE_CALL: UsageType.CALL,
    reporting_pb2.USAGE_TYPE_SMS: UsageType.SMS,
}
_USAGE_TYPE_PB = {v: k for k, v in _USAGE_TYPES.items()}
_CALL_DIRECTIONS = {
    usage_pb2.CALL_DIRECTION_OUTBOUND: Direction.OUTBOUND,
    usage_pb2.CALL_DIRECTION_INBOUND: Direction.INBOUND,
}
_CALL_DIRECTION_PB = {v: k for k, v in _CALL_DIRECTIONS.items()}
_SMS_DIRECTIONS = {
    usage_pb2.SMS_DIRECTION_OUTBOUND: Direction.OUTBOUND,
    usage_pb2.SMS_DIRECTION_INBOUND: Direction.INBOUND,
}
_SMS_DIRECTION_PB = {v: k for k, v in _SMS_DIRECTIONS.items()}
_NUMBER_TYPES = {
    usage_pb2.NUMBER_TYPE_LOCAL: NumberType.LOCAL,
    usage_pb2.NUMBER_TYPE_TOLL_FREE: NumberType.TOLL_FREE,
}
_NUMBER_TYPE_PB = {v: k for k, v in _NUMBER_TYPES.items()}
_GROUPINGS = {
    reporting_pb2.SUMMARY_GROUPING_DAY: Grouping.DAY,
    reporting_pb2.SUMMARY_GROUPING_MONTH: Grouping.MONTH,
}


# --- wire conversions ------------------------------------------------------------------------------------


def category_pb(key: RateKey) -> reporting_pb2.UsageCategory:
    category = CATEGORY_OF_RATE_KEY[key]
    message = reporting_pb2.UsageCategory(usage_type=_USAGE_TYPE_PB[category.usage_type])
    if category.usage_type is UsageType.CALL:
        assert category.direction is not None and category.number_type is not None
        message.call_direction = _CALL_DIRECTION_PB[category.direction]
        message.number_type = _NUMBER_TYPE_PB[category.number_type]
    elif category.usage_type is UsageType.SMS:
        assert category.direction is not None
        message.sms_direction = _SMS_DIRECTION_PB[category.direction]
    return message


def usage_totals_pb(by_rate_key: dict[RateKey, Sums]) -> list[reporting_pb2.UsageTotal]:
    return [
        reporting_pb2.UsageTotal(
            category=category_pb(key),
            record_count=sums.record_count,
            quantity=sums.quantity,
            billable_units=sums.billable_units,
            amount=money(sums.amount_nanos),
        )
        for key in RateKey
        if (sums := by_rate_key.get(key)) is not None
    ]


def statement_entry_pb(entry: asyncpg.Record) -> reporting_pb2.StatementEntry:
    return reporting_pb2.StatementEntry(
        ledger_sequence=entry["sequence"],
        posted_at=timestamp(entry["created_at"]),
        entry_type=entry["entry_type"],
        amount=money(entry["amount_nanos"]),
        balance_after=money(entry["balance_after_nanos"]),
        description=entry["description"],
        reference=entry["reference"],
    )


def _sum_nanos(entries: list[asyncpg.Record]) -> int:
    return sum(int(e["amount_nanos"]) for e in entries)


def statement_pb(s: Statement) -> reporting_pb2.Statement:
    return reporting_pb2.Statement(
        company_id=s.company_id,
        year=s.year,
        month=s.month,
        time_zone=s.time_zone,
        start_time=timestamp(s.start),
        end_time=timestamp(s.end),
        opening_balance=money(s.opening_balance_nanos),
        closing_balance=money(s.closing_balance_nanos),
        opening_ledger_sequence=s.opening_sequence,
        closing_ledger_sequence=s.closing_sequence,
        usage_debits=usage_totals_pb(s.usage_debits),
        usage_debits_amount=money(s.usage_debits_nanos),
        recharges=[statement_entry_pb(e) for e in s.recharges],
        recharges_amount=money(_sum_nanos(s.recharges)),
        manual_credits=[statement_entry_pb(e) for e in s.manual_credits],
        manual_credits_amount=money(_sum_nanos(s.manual_credits)),
        adjustments=[statement_entry_pb(e) for e in s.adjustments],
        adjustments_amount=money(_sum_nanos(s.adjustments)),
        other_entries=[statement_entry_pb(e) for e in s.other_entries],
        other_entries_amount=money(_sum_nanos(s.other_entries)),
    )


# --- validation ------------------------------------------------------------------------------------------


_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _moment(
    v: Violations, has_value: bool, stamp: Timestamp, field: str, *, required: bool
) -> datetime | None:
    if not has_value:
        if required:
            v.add(field, "is required")
        return None
    try:
        moment = datetime_of(stamp)
    except (ValueError, OverflowError):
        v.add(field, "is not a valid timestamp")
        return None
    # Far enough from year 1 and year 9999 that shifting into any time zone stays a valid datetime.
    if not _EARLIEST <= moment <= _LATEST:
        v.add(field, f"must be between {_EARLIEST:%Y-%m-%d} and {_LATEST:%Y-%m-%d}")
        return None
    return moment


def _ordered(
    v: Violations, start: datetime | None, end: datetime | None, start_field: str, end_field: str
) -> None:
    if start is not None and end is not None and end <= start:
        v.add(end_field, f"must be after {start_field}")


def _zone(v: Violations, name: str, field: str = "time_zone") -> Any:
    if not name:
        v.add(field, 'is required: an IANA time zone name such as "America/New_York" or "UTC"')
        return None
    zone = time_zone(name)
    if zone is None:
        v.add(field, f'{name[:64]!r} is not an IANA time zone name (e.g. "America/New_York", "UTC")')
    return zone


def _categories(v: Violations, items: Any, field: str = "categories") -> list[Category]:
    parsed: list[Category] = []
    for i, item in enumerate(items):
        here = f"{field}[{i}]"
        usage_type = _USAGE_TYPES.get(item.usage_type)
        if usage_type is None:
            v.add(f"{here}.usage_type", "must be USAGE_TYPE_EMAIL, USAGE_TYPE_CALL or USAGE_TYPE_SMS")
            continue
        call_direction = _CALL_DIRECTIONS.get(item.call_direction)
        number_type = _NUMBER_TYPES.get(item.number_type)
        sms_direction = _SMS_DIRECTIONS.get(item.sms_direction)
        if usage_type is not UsageType.CALL and (item.call_direction or item.number_type):
            v.add(here, "call_direction and number_type apply to calls only")
        if usage_type is not UsageType.SMS and item.sms_direction:
            v.add(f"{here}.sms_direction", "applies to text messages only")
        if item.call_direction and call_direction is None:
            v.add(f"{here}.call_direction", "is not a known call direction")
        if item.number_type and number_type is None:
            v.add(f"{here}.number_type", "is not a known number type")
        if item.sms_direction and sms_direction is None:
            v.add(f"{here}.sms_direction", "is not a known SMS direction")
        if usage_type is UsageType.CALL:
            parsed.append(Category(usage_type, call_direction, number_type))
        elif usage_type is UsageType.SMS:
            parsed.append(Category(usage_type, sms_direction))
        else:
            parsed.append(Category(usage_type))
    return parsed


# --- the RPCs ----------------------------------------------------------------------------------------------


class UsageReporting:
    """ListUsageRecords, GetUsageSummary, GetRateCard and EstimateCost for UsageServicer."""

    _pool: asyncpg.Pool

    async def ListUsageRecords(
        self, request: reporting_pb2.ListUsageRecordsRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.ListUsageRecordsResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        if request.page_size < 0:
            v.add("page_size", "must not be negative")
        categories = _categories(v, request.categories)
        after = _moment(
            v, request.HasField("occurred_after"), request.occurred_after, "occurred_after", required=False
        )
        before = _moment(
            v, request.HasField("occurred_before"), request.occurred_before, "occurred_before", required=False
        )
        _ordered(v, after, before, "occurred_after", "occurred_before")
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
        # Imported here: usage_servicer imports this module for the mixin.
        from service.api.usage_servicer import usage_record_of_row

        return reporting_pb2.ListUsageRecordsResponse(
            usage_records=[usage_record_of_row(row) for row in page.records],
            next_page_token=page.next_page_token,
        )

    async def GetUsageSummary(
        self, request: reporting_pb2.GetUsageSummaryRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.GetUsageSummaryResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        start = _moment(v, request.HasField("start_time"), request.start_time, "start_time", required=True)
        end = _moment(v, request.HasField("end_time"), request.end_time, "end_time", required=True)
        _ordered(v, start, end, "start_time", "end_time")
        if start is not None and end is not None and end - start > MAX_SUMMARY_RANGE:
            v.add("end_time", f"must be at most {MAX_SUMMARY_RANGE.days} days after start_time")
        grouping = _GROUPINGS.get(request.grouping)
        if grouping is None:
            v.add("grouping", "must be SUMMARY_GROUPING_DAY or SUMMARY_GROUPING_MONTH")
        zone = _zone(v, request.time_zone)
        v.raise_if_any()
        assert start is not None and end is not None and grouping is not None
        summary = await usage_summary(self._pool, request.company_id, periods(start, end, zone, grouping))
        return reporting_pb2.GetUsageSummaryResponse(
            periods=[
                reporting_pb2.UsagePeriod(
                    label=p.period.label,
                    start_time=timestamp(p.period.start),
                    end_time=timestamp(p.period.end),
                    totals=usage_totals_pb(p.by_rate_key),
                    amount=money(p.amount_nanos),
                )
                for p in summary.periods
            ],
            totals=usage_totals_pb(summary.totals),
            amount=money(summary.amount_nanos),
        )

    async def GetRateCard(
        self, request: reporting_pb2.GetRateCardRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.GetRateCardResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        at = _moment(
            v, request.HasField("effective_at"), request.effective_at, "effective_at", required=False
        )
        v.raise_if_any()
        at = at or datetime.now(UTC)
        rates = await rate_card(self._pool, request.company_id, at)
        return reporting_pb2.GetRateCardResponse(
            effective_at=timestamp(at),
            rates=[
                reporting_pb2.AppliedRate(
                    category=category_pb(r.rate_key),
                    unit=UNIT_OF_USAGE_TYPE[CATEGORY_OF_RATE_KEY[r.rate_key].usage_type],
                    unit_price=money(r.unit_price_nanos),
                    rate_card=r.rate_card,
                    rate_card_version=r.rate_card_version,
                    effective_from=timestamp(r.effective_from),
                    company_override=r.company_override,
                )
                for r in rates
            ],
        )

    async def EstimateCost(
        self, request: reporting_pb2.EstimateCostRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.EstimateCostResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        usage = parse_usage(v, request.usage)
        if not 0 <= request.repeat_count <= MAX_REPEAT_COUNT:
            v.add("repeat_count", f"must be between 0 (meaning 1) and {MAX_REPEAT_COUNT:,}")
        at = _moment(
            v, request.HasField("effective_at"), request.effective_at, "effective_at", required=False
        )
        v.raise_if_any()
        assert usage is not None
        estimate = await estimate_cost(
            self._pool, request.company_id, usage, request.repeat_count or 1, at or datetime.now(UTC)
        )
        encoding = estimate.metering.sms_encoding
        return reporting_pb2.EstimateCostResponse(
            price=usage_pb2.Price(
                billable_units=estimate.metering.billable_units,
                unit_price=money(estimate.unit_price_nanos),
                amount=money(estimate.amount_nanos),
                rate_card=estimate.rate_card,
                rate_card_version=estimate.rate_card_version,
                sms_encoding=usage_pb2.SmsEncoding.Value(f"SMS_ENCODING_{encoding.value.upper()}")
                if encoding is not None
                else usage_pb2.SMS_ENCODING_UNSPECIFIED,
            ),
            repeat_count=estimate.repeat_count,
            total_billable_units=estimate.total_billable_units,
            total_amount=money(estimate.total_amount_nanos),
        )


class WalletReporting:
    """GetStatement and ExportWalletTransactions for WalletServicer."""

    _pool: asyncpg.Pool

    async def GetStatement(
        self, request: reporting_pb2.GetStatementRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.GetStatementResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        if not 1970 <= request.year <= 9998:
            v.add("year", "must be between 1970 and 9998")
        if not 1 <= request.month <= 12:
            v.add("month", "must be between 1 and 12")
        zone = _zone(v, request.time_zone)
        v.raise_if_any()
        result = await statement(self._pool, request.company_id, request.year, request.month, zone)
        return reporting_pb2.GetStatementResponse(statement=statement_pb(result))

    async def ExportWalletTransactions(
        self, request: reporting_pb2.ExportWalletTransactionsRequest, context: ServicerContext[Any, Any]
    ) -> AsyncIterator[reporting_pb2.ExportWalletTransactionsResponse]:
        v = Violations()
        check_company_id(v, request.company_id)
        start = _moment(v, request.HasField("start_time"), request.start_time, "start_time", required=False)
        end = _moment(v, request.HasField("end_time"), request.end_time, "end_time", required=False)
        _ordered(v, start, end, "start_time", "end_time")
        v.raise_if_any()
        async for chunk in export_ledger(self._pool, request.company_id, start, end):
            yield reporting_pb2.ExportWalletTransactionsResponse(
                csv_chunk=chunk.data, row_count=chunk.row_count
            )
