"""The operator's path: `serve` with BILLING_AUTH=required, keys made, listed and revoked with the
`keys` commands, calls through the generated stubs. Two replicas on one database: a revocation reaches
both within seconds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.type import money_pb2

from service.api.auth import KEY_CACHE_TTL_S
from service.app.api_keys import SECRET
from tests.security.conftest import bearer
from tests.support.cli import run
from tests.support.process import ServiceProcess


async def create_key(db_url: str, *args: str) -> tuple[str, str]:
    """`keys create ARGS` -> (key id, secret), checking that the secret is alone on the last line."""
    result = await run("keys", "create", *args, database_url=db_url)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert SECRET.fullmatch(lines[-1]), "the last line of stdout is the secret and nothing else"
    assert lines[-1] not in "\n".join(lines[:-1]) and lines[-1] not in result.err
    key_id = lines[0].split()[1]
    return key_id, lines[-1]


def _record(company: str, key: str) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company, idempotency_key=key, usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=10))
    )


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
async def test_keys_roles_scope_and_revocation_across_two_replicas(db_url: str, tmp_path: Path) -> None:
    writer_id, writer = await create_key(db_url, "--name", "metering", "--role", "usage-writer")
    _, dashboard = await create_key(db_url, "--name", "dash-a", "--role", "dashboard", "--company", "co-a")
    _, admin = await create_key(db_url, "--name", "ops", "--role", "admin")
    env = {
        "DATABASE_URL": db_url,
        "BILLING_AUTH": "required",
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
    }
    replicas = [ServiceProcess(env, tmp_path / f"replica{i}.log") for i in (1, 2)]
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            await replica.wait_serving()
        channels = [grpc.aio.insecure_channel(r.target) for r in replicas]
        usage = [usage_service_pb2_grpc.UsageServiceStub(c) for c in channels]
        wallet = [wallet_service_pb2_grpc.WalletServiceStub(c) for c in channels]
        for company in ("co-a", "co-b"):
            await wallet[0].CreateWallet(
                wallet_service_pb2.CreateWalletRequest(
                    company_id=company, display_name=company, request_id=company
                ),
                metadata=bearer(admin),
            )

        # No token.
        assert await _code(usage[0].RecordUsage(_record("co-a", "u0"))) is grpc.StatusCode.UNAUTHENTICATED
        # A usage-writer records usage, on both replicas, and may not credit.
        for i in (0, 1):
            reply = await usage[i].RecordUsage(_record("co-a", f"u{i + 1}"), metadata=bearer(writer))
            assert not reply.replayed
        credit = wallet_service_pb2.CreditWalletRequest(
            company_id="co-a",
            request_id="c1",
            amount=money_pb2.Money(currency_code="USD", units=100_000),
            reason="goodwill",
        )
        assert (
            await _code(wallet[0].CreditWallet(credit, metadata=bearer(writer)))
            is grpc.StatusCode.PERMISSION_DENIED
        )
        # A dashboard key bound to co-a reads co-a, not co-b.
        read_a = wallet[0].GetWallet(
            wallet_service_pb2.GetWalletRequest(company_id="co-a"), metadata=bearer(dashboard)
        )
        assert await _code(read_a) is grpc.StatusCode.OK
        read_b = wallet[0].GetWallet(
            wallet_service_pb2.GetWalletRequest(company_id="co-b"), metadata=bearer(dashboard)
        )
        assert await _code(read_b) is grpc.StatusCode.PERMISSION_DENIED

        listed = await run("keys", "list", database_url=db_url)
        assert listed.code == 0, listed.err
        row = next(line for line in listed.out.splitlines() if line.startswith(writer_id))
        assert (
            "usage-writer" in row and " *" in row and row.rstrip().endswith("-")
        )  # every company, not revoked
        assert writer not in listed.out

        revoked = await run("keys", "revoke", writer_id, database_url=db_url)
        assert revoked.code == 0, revoked.err
        started = time.monotonic()
        refused_after_s: list[float] = []
        for i in (0, 1):
            while True:
                code = await _code(
                    usage[i].RecordUsage(_record("co-a", f"late-{i}"), metadata=bearer(writer))
                )
                if code is grpc.StatusCode.UNAUTHENTICATED:
                    refused_after_s.append(time.monotonic() - started)
                    break
                assert code is grpc.StatusCode.OK
                assert time.monotonic() - started < KEY_CACHE_TTL_S + 3, "revocation not effective in time"
                await asyncio.sleep(0.1)
        assert max(refused_after_s) < KEY_CACHE_TTL_S + 3
        relisted = await run("keys", "list", database_url=db_url)
        row = next(line for line in relisted.out.splitlines() if line.startswith(writer_id))
        assert "by cli:" in row
        for channel in channels:
            await channel.close()
    finally:
        for replica in replicas:
            replica.kill_quietly()


async def test_keys_create_refuses_a_bad_role_or_company(db_url: str) -> None:
    bad_role = await run("keys", "create", "--name", "x", "--role", "root", database_url=db_url)
    assert bad_role.code == 2 and "--role" in bad_role.err
    bad_company = await run(
        "keys", "create", "--name", "x", "--role", "dashboard", "--company", "no spaces", database_url=db_url
    )
    assert bad_company.code == 2 and "company id" in bad_company.err
    unknown = await run("keys", "revoke", "key_aaaaaaaaaaaaaaaa", database_url=db_url)
    assert unknown.code == 1 and "no API key" in unknown.err
