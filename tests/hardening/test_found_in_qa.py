"""The inputs a QA pass found accepted or mis-answered, each now refused or answered as the contract says."""

from __future__ import annotations

import io
import json
from typing import Any

import grpc
import pytest
from consofta.billing.v1 import (
    reporting_pb2,
    usage_pb2,
    usage_service_pb2,
    wallet_service_pb2,
)
from google.type.money_pb2 import Money
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.server import SERVICE_NAMES, BillingServer
from tests.conftest import Stubs
from tests.ops.conftest import scrape, value
from tests.support.rpc import rich_error

USAGE = "consofta.billing.v1.UsageService"


async def _refused(call: object, field: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, error
    assert field in error.fields, error.fields
    return error.fields[field]


@pytest.mark.parametrize("name", ["Acme\u0085Inc", "Acme \u202egnp.exe", "Acme\u2028Inc", "Acme\x7f"])
async def test_display_names_with_c1_controls_bidi_overrides_or_separators_are_refused(
    stubs: Stubs, name: str
) -> None:
    await _refused(
        stubs.wallet.CreateWallet(
            wallet_service_pb2.CreateWalletRequest(company_id="named", display_name=name, request_id="r")
        ),
        "display_name",
    )


async def test_an_emoji_name_with_joiners_is_still_a_name(stubs: Stubs) -> None:
    reply = await stubs.wallet.CreateWallet(
        wallet_service_pb2.CreateWalletRequest(
            company_id="family",
            display_name="Family \U0001f468\u200d\U0001f469\u200d\U0001f467",
            request_id="r",
        )
    )
    assert reply.wallet.display_name.startswith("Family")


@pytest.mark.parametrize("key", ["   ", " k", "k ", " k "])
async def test_keys_with_outer_spaces_are_refused_rather_than_two_keys_that_read_alike(
    stubs: Stubs, key: str
) -> None:
    company = await stubs.new_company()
    await _refused(
        stubs.usage.RecordUsage(
            usage_service_pb2.RecordUsageRequest(
                company_id=company,
                idempotency_key=key,
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1)),
            )
        ),
        "idempotency_key",
    )


async def test_a_credit_reason_is_one_line(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await _refused(
        stubs.wallet.CreditWallet(
            wallet_service_pb2.CreditWalletRequest(
                company_id=company,
                amount=Money(currency_code="USD", units=5),
                reason="goodwill\nsecond line",
                request_id="credit-1",
            )
        ),
        "reason",
    )


async def test_lowercase_usd_is_refused(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await _refused(
        stubs.wallet.CreditWallet(
            wallet_service_pb2.CreditWalletRequest(
                company_id=company, amount=Money(currency_code="usd", units=5), reason="x", request_id="c"
            )
        ),
        "amount",
    )


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory"])
async def test_host_dependent_time_zone_names_are_refused(stubs: Stubs, zone: str) -> None:
    company = await stubs.new_company()
    await _refused(
        stubs.wallet.GetStatement(
            reporting_pb2.GetStatementRequest(company_id=company, year=2026, month=1, time_zone=zone)
        ),
        "time_zone",
    )


async def test_a_bound_of_one_reads_in_the_singular(stubs: Stubs) -> None:
    company = await stubs.new_company()
    description = await _refused(
        stubs.usage.RecordUsage(
            usage_service_pb2.RecordUsageRequest(
                company_id=company,
                idempotency_key="k",
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=0)),
            )
        ),
        "usage.email.count",
    )
    assert description.startswith("must be at least 1 email,"), description


async def test_a_10_kb_currency_is_echoed_as_a_short_prefix(stubs: Stubs) -> None:
    company = await stubs.new_company()
    description = await _refused(
        stubs.wallet.CreditWallet(
            wallet_service_pb2.CreditWalletRequest(
                company_id=company,
                amount=Money(currency_code="X" * 10_000, units=5),
                reason="x",
                request_id="c",
            )
        ),
        "amount",
    )
    assert len(description) < 200 and "10,000 characters" in description, description


async def test_undecodable_bytes_get_the_canonical_line_and_the_metric_without_a_traceback(
    app: BillingServer, stubs: Stubs, info_logs: io.StringIO
) -> None:
    labels = {"grpc_service": USAGE, "grpc_method": "RecordUsage", "grpc_code": "INVALID_ARGUMENT"}
    before = value(await scrape(app.metrics_port or 0), "grpc_server_handled_total", **labels)
    # Field 1 (company_id) holding bytes that are not UTF-8.
    raw = b"\x0a\x04\xff\xfe\xfd\xfc"
    call: Any = stubs.channel.unary_unary(f"/{USAGE}/RecordUsage")  # no serializer: raw bytes
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(raw, timeout=5)
    error = rich_error(caught.value)
    assert (error.code, error.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        {"company_id": "is not valid UTF-8"},
    )
    after = value(await scrape(app.metrics_port or 0), "grpc_server_handled_total", **labels)
    assert after == before + 1
    lines = [json.loads(line) for line in info_logs.getvalue().splitlines() if line.startswith("{")]
    rpc_lines = [
        line
        for line in lines
        if line.get("event") == "rpc" and line.get("method", "").endswith("RecordUsage")
    ]
    assert [line["code"] for line in rpc_lines] == ["INVALID_ARGUMENT"]
    assert "Traceback" not in info_logs.getvalue()


async def test_health_list_answers_every_service(stubs: Stubs) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    reply = await health.List(health_pb2.HealthListRequest())
    assert set(reply.statuses) == {"", *SERVICE_NAMES}
    assert {s.status for s in reply.statuses.values()} == {health_pb2.HealthCheckResponse.SERVING}
