"""GetRateCard shows what effective_rate() charges; EstimateCost prices as RecordUsage and records nothing."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import reporting_pb2, usage_pb2, usage_service_pb2

from service.api.wire.money import nanos_of
from service.api.wire.timestamps import timestamp
from service.domain.usage_kinds import DEFAULT_RATES_NANOS, RATE_KEYS
from tests.conftest import Stubs
from tests.reporting.test_statements_and_summaries import _rate_key
from tests.support.rpc import rich_error
from tests.support.usage_examples import UNIT_OF_RATE_KEY


async def override(
    conn: asyncpg.Connection, company: str, effective_from: datetime, rates: dict[str, int]
) -> None:
    card = await conn.fetchval(
        "insert into rate_cards (company_id, version, effective_from)"
        " values ($1, coalesce((select max(version) from rate_cards where company_id = $1), 0) + 1, $2)"
        " returning rate_card_id",
        company,
        effective_from,
    )
    for key, price in rates.items():
        await conn.execute("insert into rate_card_rates values ($1, $2, $3)", card, key, price)


async def test_rate_card_lists_overrides_and_agrees_with_effective_rate(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    switch = datetime.now(UTC) - timedelta(days=2)
    await override(conn, company, switch, {"email": 500_000, "sms_outbound": 7_000_000})

    before = await stubs.usage.GetRateCard(
        reporting_pb2.GetRateCardRequest(
            company_id=company, effective_at=timestamp(switch - timedelta(seconds=1))
        )
    )
    assert {_rate_key(r.category): nanos_of(r.unit_price) for r in before.rates} == {
        k: v for k, v in DEFAULT_RATES_NANOS.items()
    }
    assert not any(r.company_override for r in before.rates)

    now = await stubs.usage.GetRateCard(reporting_pb2.GetRateCardRequest(company_id=company))
    assert len(now.rates) == len(RATE_KEYS)
    for rate in now.rates:
        key = _rate_key(rate.category)
        expected = await conn.fetchrow("select * from effective_rate($1, $2, now())", company, key)
        assert (nanos_of(rate.unit_price), rate.rate_card, rate.rate_card_version) == tuple(expected)
        assert rate.company_override == (key in ("email", "sms_outbound"))
        assert rate.unit == UNIT_OF_RATE_KEY[key]
    email = next(r for r in now.rates if _rate_key(r.category) == "email")
    assert (email.rate_card, email.rate_card_version, email.effective_from) == (company, 1, timestamp(switch))


async def test_estimate_prices_like_record_usage_and_records_nothing(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    await override(conn, company, datetime.now(UTC) - timedelta(days=1), {"sms_outbound": 7_000_000})
    body = "Your table is ready — reply YES to confirm"  # the dash forces UCS-2
    usage = usage_pb2.Usage(sms=usage_pb2.SmsUsage(direction=usage_pb2.SMS_DIRECTION_OUTBOUND, body=body))
    estimate = await stubs.usage.EstimateCost(
        reporting_pb2.EstimateCostRequest(company_id=company, usage=usage, repeat_count=20_000)
    )
    wallet_before = await conn.fetchrow("select * from wallets where company_id = $1", company)
    assert await conn.fetchval("select count(*) from usage_records where company_id = $1", company) == 0
    assert wallet_before["last_sequence"] == 0

    recorded = await stubs.usage.RecordUsage(
        usage_service_pb2.RecordUsageRequest(company_id=company, idempotency_key="real", usage=usage)
    )
    assert estimate.price == recorded.usage_record.price
    assert estimate.price.rate_card == company and estimate.price.sms_encoding == usage_pb2.SMS_ENCODING_UCS2
    assert estimate.repeat_count == 20_000
    assert estimate.total_billable_units == 20_000 * estimate.price.billable_units
    assert nanos_of(estimate.total_amount) == 20_000 * nanos_of(estimate.price.amount) == 20_000 * 7_000_000


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (reporting_pb2.EstimateCostRequest(usage=usage_pb2.Usage()), "usage"),
        (
            reporting_pb2.EstimateCostRequest(usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=0))),
            "usage.email.count",
        ),
        (
            reporting_pb2.EstimateCostRequest(
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1)), repeat_count=10_000_001
            ),
            "repeat_count",
        ),
    ],
)
async def test_estimate_rejects_bad_usage_by_field(
    stubs: Stubs, request_: reporting_pb2.EstimateCostRequest, field: str
) -> None:
    request_.company_id = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.usage.EstimateCost(request_)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and field in error.fields


async def test_reports_of_an_unknown_company_are_not_found(stubs: Stubs) -> None:
    calls: list[Awaitable[object]] = [
        stubs.usage.GetRateCard(reporting_pb2.GetRateCardRequest(company_id="ghost")),
        stubs.usage.EstimateCost(
            reporting_pb2.EstimateCostRequest(
                company_id="ghost", usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
            )
        ),
        stubs.wallet.GetStatement(
            reporting_pb2.GetStatementRequest(company_id="ghost", year=2025, month=1, time_zone="UTC")
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
