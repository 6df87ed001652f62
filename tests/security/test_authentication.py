"""Authentication on a real server with BILLING_AUTH=required: missing, malformed, unknown, revoked and
expired keys; the principal on the canonical line and in the audit trails; `auth=off` on every line
while authentication is off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import structlog
from consofta.billing.v1 import (
    settings_service_pb2,
    settings_service_pb2_grpc,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import money_pb2

from service.api.auth import BAD_KEY, KEY_CACHE_TTL_S, NO_CREDENTIALS
from service.app.api_keys import create_key, new_secret, revoke_key
from service.server import BillingServer
from tests.conftest import Stubs
from tests.security.conftest import MakeKey, bearer
from tests.support.rpc import rich_error
from tests.wallet.conftest import outbound_call, record


async def _refusal(call: object) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    return error.code, error.message, error.reason


def _get(channel: grpc.aio.Channel, company: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    stub = wallet_service_pb2_grpc.WalletServiceStub(channel)
    return stub.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company), metadata=metadata)


async def _company(channel: grpc.aio.Channel, admin: str, company: str) -> None:
    await wallet_service_pb2_grpc.WalletServiceStub(channel).CreateWallet(
        wallet_service_pb2.CreateWalletRequest(company_id=company, display_name=company, request_id=company),
        metadata=bearer(admin),
    )


async def test_missing_and_malformed_credentials_are_unauthenticated(
    secure_app: BillingServer, channel: grpc.aio.Channel
) -> None:
    assert await _refusal(_get(channel, "acme")) == (
        grpc.StatusCode.UNAUTHENTICATED,
        NO_CREDENTIALS,
        "UNAUTHENTICATED",
    )
    for header in ("Bearer", "Bearer not-a-key", "Basic dXNlcjpwYXNz", "cbk_" + "a" * 43, "Bearer cbk_short"):
        code, message, _ = await _refusal(_get(channel, "acme", (("authorization", header),)))
        assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, BAD_KEY), header


async def test_unknown_revoked_and_expired_keys_get_the_same_answer(
    secure_app: BillingServer, channel: grpc.aio.Channel, pool: asyncpg.Pool, make_key: MakeKey
) -> None:
    admin = await make_key("admin")
    await _company(channel, admin, "acme")
    revoked = await create_key(pool, "soon revoked", "dashboard", ["acme"], "test")
    expires_at = datetime.now(UTC) + timedelta(seconds=3)
    expiring = await create_key(pool, "short-lived", "dashboard", ["acme"], "test", expires_at)
    # Both work first (and are now in the key cache).
    await _get(channel, "acme", bearer(revoked.secret))
    await _get(channel, "acme", bearer(expiring.secret))

    await revoke_key(pool, revoked.key.key_id, "test")
    await asyncio.sleep(KEY_CACHE_TTL_S + 0.2)
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.1)
    answers = {
        name: await _refusal(_get(channel, "acme", bearer(secret)))
        for name, secret in (
            ("unknown", new_secret()),
            ("revoked", revoked.secret),
            ("expired", expiring.secret),
        )
    }
    assert set(answers.values()) == {(grpc.StatusCode.UNAUTHENTICATED, BAD_KEY, "UNAUTHENTICATED")}, answers


async def test_expiry_is_checked_on_every_call_not_only_when_the_cache_refreshes(
    secure_app: BillingServer, channel: grpc.aio.Channel, pool: asyncpg.Pool, make_key: MakeKey
) -> None:
    await _company(channel, await make_key("admin"), "acme")
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    key = await create_key(pool, "short-lived", "dashboard", None, "test", expires_at)
    await _get(channel, "acme", bearer(key.secret))
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    # Well inside the cache's TTL after the last lookup, yet refused.
    code, _, _ = await _refusal(_get(channel, "acme", bearer(key.secret)))
    assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_the_canonical_line_names_the_principal(
    secure_app: BillingServer, channel: grpc.aio.Channel, pool: asyncpg.Pool, info_logs: object
) -> None:
    admin = await create_key(pool, "ops", "admin", None, "test")
    with structlog.testing.capture_logs() as logs:
        await _company(channel, admin.secret, "acme")
        await _refusal(_get(channel, "acme"))
    lines = [line for line in logs if line["event"] == "rpc"]
    assert [(line["code"], line.get("principal"), line.get("auth")) for line in lines] == [
        ("OK", f"key:{admin.key.key_id}", None),
        ("UNAUTHENTICATED", None, None),
    ]


async def test_with_auth_off_every_line_says_so(stubs: Stubs, info_logs: object) -> None:
    with structlog.testing.capture_logs() as logs:
        company = await stubs.new_company()
        await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
    lines = [line for line in logs if line["event"] == "rpc"]
    assert len(lines) == 2
    assert all(line["auth"] == "off" and "principal" not in line for line in lines)


async def test_audit_rows_record_the_principal_and_a_label_only_beside_it(
    secure_app: BillingServer, channel: grpc.aio.Channel, pool: asyncpg.Pool, make_key: MakeKey
) -> None:
    admin = await make_key("admin")
    await _company(channel, admin, "acme")
    dashboard = await create_key(pool, "dash", "dashboard", ["acme"], "test")
    finance = await create_key(pool, "money", "finance", None, "test")
    settings = settings_service_pb2_grpc.SettingsServiceStub(channel)
    update = settings_service_pb2.UpdateBillingSettingsRequest(
        company_id="acme",
        request_id="s1",
        settings=settings_service_pb2.BillingSettings(
            recharge_amount=money_pb2.Money(currency_code="USD", units=75)
        ),
        update_mask=FieldMask(paths=["recharge_amount"]),
    )
    # A forged x-actor is kept as the "on behalf of" label; the principal comes from the key.
    await settings.UpdateBillingSettings(
        update, metadata=(*bearer(dashboard.secret), ("x-actor", "owner@other.example"))
    )
    listed = await settings.ListSettingsChanges(
        settings_service_pb2.ListSettingsChangesRequest(company_id="acme"), metadata=bearer(dashboard.secret)
    )
    assert [(c.field, c.actor, c.principal_id) for c in listed.changes] == [
        ("recharge_amount", "owner@other.example", f"key:{dashboard.key.key_id}")
    ]
    wallet = wallet_service_pb2_grpc.WalletServiceStub(channel)
    await wallet.CreditWallet(
        wallet_service_pb2.CreditWalletRequest(
            company_id="acme",
            request_id="c1",
            amount=money_pb2.Money(currency_code="USD", units=5),
            reason="goodwill",
            actor="cfo@consofta.com",
        ),
        metadata=bearer(finance.secret),
    )
    row = await pool.fetchrow("select actor, principal_id from wallet_credits where company_id = 'acme'")
    assert dict(row) == {"actor": "cfo@consofta.com", "principal_id": f"key:{finance.key.key_id}"}
    recorded = await usage_service_pb2_grpc.UsageServiceStub(channel).RecordUsage(
        record("acme", "u1", outbound_call(60)), metadata=bearer(admin)
    )
    await wallet.VoidUsageRecord(
        wallet_service_pb2.VoidUsageRecordRequest(
            company_id="acme",
            request_id="v1",
            usage_record_id=recorded.usage_record.id,
            reason="dropped call",
            actor="cfo@consofta.com",
        ),
        metadata=bearer(finance.secret),
    )
    row = await pool.fetchrow("select actor, principal_id from usage_voids where company_id = 'acme'")
    assert dict(row) == {"actor": "cfo@consofta.com", "principal_id": f"key:{finance.key.key_id}"}


async def test_a_scoped_key_changes_nothing_of_another_company(
    secure_app: BillingServer, channel: grpc.aio.Channel, pool: asyncpg.Pool, make_key: MakeKey
) -> None:
    """0 cross-company reads or writes: real, valid requests for company B with keys bound to A."""
    admin = await make_key("admin")
    for company in ("co-a", "co-b"):
        await _company(channel, admin, company)
    finance_a = await make_key("finance", ["co-a"])
    dashboard_a = await make_key("dashboard", ["co-a"])
    before = await pool.fetchval("select count(*) from ledger_entries where company_id = 'co-b'")
    wallet = wallet_service_pb2_grpc.WalletServiceStub(channel)
    settings = settings_service_pb2_grpc.SettingsServiceStub(channel)
    credit = wallet.CreditWallet(
        wallet_service_pb2.CreditWalletRequest(
            company_id="co-b",
            request_id="x1",
            amount=money_pb2.Money(currency_code="USD", units=100_000),
            reason="r",
        ),
        metadata=bearer(finance_a),
    )
    change = settings.UpdateBillingSettings(
        settings_service_pb2.UpdateBillingSettingsRequest(
            company_id="co-b",
            request_id="x2",
            settings=settings_service_pb2.BillingSettings(
                recharge_amount=money_pb2.Money(currency_code="USD", units=75)
            ),
            update_mask=FieldMask(paths=["recharge_amount"]),
        ),
        metadata=bearer(dashboard_a),
    )
    setup = settings.StartCardSetup(
        settings_service_pb2.StartCardSetupRequest(company_id="co-b", request_id="x3"),
        metadata=bearer(dashboard_a),
    )
    for call in (credit, change, setup, _get(channel, "co-b", bearer(dashboard_a))):
        code, _, _ = await _refusal(call)
        assert code is grpc.StatusCode.PERMISSION_DENIED
    assert await pool.fetchval("select count(*) from ledger_entries where company_id = 'co-b'") == before
    assert await pool.fetchval("select count(*) from settings_changes where company_id = 'co-b'") == 0
    assert await pool.fetchval("select count(*) from idempotency_keys where company_id = 'co-b'") == 1


async def test_a_limit_above_the_approval_level_needs_finance_not_the_dashboard(
    secure_app: BillingServer, channel: grpc.aio.Channel, make_key: MakeKey
) -> None:
    await _company(channel, await make_key("admin"), "acme")
    settings = settings_service_pb2_grpc.SettingsServiceStub(channel)

    def raise_minimum(request_id: str, secret: str) -> Any:
        return settings.UpdateBillingSettings(
            settings_service_pb2.UpdateBillingSettingsRequest(
                company_id="acme",
                request_id=request_id,
                settings=settings_service_pb2.BillingSettings(
                    minimum_balance=money_pb2.Money(currency_code="USD", units=100_000)
                ),
                update_mask=FieldMask(paths=["minimum_balance"]),
            ),
            metadata=bearer(secret),
        )

    code, _, reason = await _refusal(raise_minimum("m1", await make_key("dashboard", ["acme"])))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "APPROVAL_REQUIRED")
    applied = await raise_minimum("m2", await make_key("finance", ["acme"]))
    assert applied.settings.minimum_balance.units == 100_000
