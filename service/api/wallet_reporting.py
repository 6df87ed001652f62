"""WalletService's reports: GetStatement and ExportWalletTransactions, mixed into WalletServicer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
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
from service.api.wire.reporting import statement_message
from service.app.reporting.export import export_ledger
from service.app.reporting.statements import statement
from service.domain.periods import current_month

EARLIEST_STATEMENT_YEAR = 1970
LATEST_STATEMENT_YEAR = 9998


class WalletReporting:
    _pool: asyncpg.Pool

    async def GetStatement(
        self, request: reporting_pb2.GetStatementRequest, context: ServicerContext[Any, Any]
    ) -> reporting_pb2.GetStatementResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        # Neither year nor month: the current month (in time_zone, once it is known to be valid).
        this_month = request.year == 0 and request.month == 0
        if not this_month:
            if not EARLIEST_STATEMENT_YEAR <= request.year <= LATEST_STATEMENT_YEAR:
                v.add("year", f"must be between {EARLIEST_STATEMENT_YEAR} and {LATEST_STATEMENT_YEAR}")
            if not 1 <= request.month <= 12:
                v.add("month", "must be between 1 and 12")
        zone = parse_time_zone(v, request.time_zone)
        v.raise_if_any()
        assert zone is not None
        year, month = current_month(datetime.now(UTC), zone) if this_month else (request.year, request.month)
        result = await statement(self._pool, request.company_id, year, month, zone)
        return reporting_pb2.GetStatementResponse(statement=statement_message(result))

    async def ExportWalletTransactions(
        self, request: reporting_pb2.ExportWalletTransactionsRequest, context: ServicerContext[Any, Any]
    ) -> AsyncIterator[reporting_pb2.ExportWalletTransactionsResponse]:
        v = Violations()
        check_company_id(v, request.company_id)
        start = parse_moment(
            v, request.HasField("start_time"), request.start_time, "start_time", required=False
        )
        end = parse_moment(v, request.HasField("end_time"), request.end_time, "end_time", required=False)
        check_ordered(v, start, end, "start_time", "end_time")
        v.raise_if_any()
        async for chunk in export_ledger(self._pool, request.company_id, start, end):
            yield reporting_pb2.ExportWalletTransactionsResponse(
                csv_chunk=chunk.data, row_count=chunk.row_count
            )
