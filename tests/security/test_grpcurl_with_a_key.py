"""The README's grpcurl with a key, against a server with BILLING_AUTH=required."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.server import BillingServer
from tests.e2e.test_reflection_grpcurl import GRPCURL, _grpcurl
from tests.security.conftest import MakeKey


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl not installed")
async def test_grpcurl_with_a_key_lists_and_calls_and_without_one_is_refused(
    secure_app: BillingServer, make_key: MakeKey
) -> None:
    target = f"127.0.0.1:{secure_app.port}"
    key = await make_key("admin")
    header = f"authorization: Bearer {key}"
    assert (
        "consofta.billing.v1.WalletService"
        in (await _grpcurl("-plaintext", "-H", header, target, "list")).split()
    )
    body = json.dumps({"company_id": "acme", "display_name": "Acme Inc", "request_id": "create-acme"})
    created = json.loads(
        await _grpcurl(
            "-plaintext", "-H", header, "-d", body, target, "consofta.billing.v1.WalletService/CreateWallet"
        )
    )
    assert created["wallet"]["company_id"] == "acme"
    assert GRPCURL is not None
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-d",
        '{"company_id": "acme"}',
        target,
        "consofta.billing.v1.WalletService/GetWallet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode != 0 and "Unauthenticated" in err.decode()
