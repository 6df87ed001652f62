"""The audit trail: who changed which setting from what to what, written with the change, paginated."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.conftest import Stubs
from tests.settings.test_update_settings import SettingsStub, update, usd
from tests.support.rpc import rich_error


async def changes(
    settings: SettingsStub, company: str, page_size: int = 0, token: str = ""
) -> pb.ListSettingsChangesResponse:
    return await settings.ListSettingsChanges(
        pb.ListSettingsChangesRequest(company_id=company, page_size=page_size, page_token=token)
    )


async def test_changes_record_old_and_new_values_and_the_actor(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    await update(
        settings,
        company,
        ["recharge_amount", "monthly_recharge_cap", "minimum_balance"],
        "req-1",
        metadata=(("x-actor", "jane@example.com"),),
        recharge_amount=usd(75, 250_000_000),
        monthly_recharge_cap=usd(1_000),
        minimum_balance=usd(0),  # unchanged: no row
    )
    # No x-actor: the principal, "anonymous" while auth is off (tests/security covers it on).
    await update(settings, company, ["monthly_recharge_cap"], "req-2")

    listed = (await changes(settings, company)).changes
    rows = [
        (
            c.field,
            c.old_value if c.HasField("old_value") else None,
            c.new_value if c.HasField("new_value") else None,
            c.actor,
            c.request_id,
        )
        for c in listed
    ]
    assert rows == [
        ("monthly_recharge_cap", "1000.00", None, "anonymous", "req-2"),
        ("monthly_recharge_cap", "5000.00", "1000.00", "jane@example.com", "req-1"),
        ("recharge_amount", "50.00", "75.25", "jane@example.com", "req-1"),
    ]
    assert all(c.HasField("changed_at") for c in listed)
    assert listed[0].change_id > listed[1].change_id > listed[2].change_id


async def test_side_effects_on_the_pause_status_are_audited_too(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    await update(settings, company, ["auto_recharge_enabled"], "r1", auto_recharge_enabled=True)
    fields = {(c.field, c.new_value) for c in (await changes(settings, company)).changes}
    assert fields == {("auto_recharge_enabled", "true"), ("auto_recharge_paused_reason", "no_card")}


async def test_a_refused_change_writes_no_audit_row(
    stubs: Stubs, settings: SettingsStub, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError):
        await update(
            settings,
            company,
            ["recharge_amount", "preload_amount"],
            "r1",
            recharge_amount=usd(60),
            preload_amount=usd(1),
        )
    assert (await changes(settings, company)).changes == []
    stored = await pool.fetchval(
        "select recharge_amount_nanos from billing_settings where company_id = $1", company
    )
    assert stored == 50_000_000_000  # the valid half of the request did not apply either


async def test_the_audit_trail_cannot_be_rewritten(
    stubs: Stubs, settings: SettingsStub, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await update(settings, company, ["recharge_amount"], "r1", recharge_amount=usd(60))
    with pytest.raises(asyncpg.PostgresError):
        await pool.execute("update settings_changes set actor = 'mallory' where company_id = $1", company)


async def test_list_pages_through_every_change_newest_first(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    for i in range(7):
        await update(settings, company, ["recharge_amount"], f"r{i}", recharge_amount=usd(10 + i))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await changes(settings, company, page_size=3, token=token)
        pages += 1
        seen.extend(c.new_value for c in page.changes)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [f"{10 + i}.00" for i in reversed(range(7))]


async def test_list_rejects_foreign_or_forged_page_tokens(stubs: Stubs, settings: SettingsStub) -> None:
    one, two = await stubs.new_company(), await stubs.new_company()
    for i in range(3):
        await update(settings, one, ["recharge_amount"], f"r{i}", recharge_amount=usd(10 + i))
    token = (await changes(settings, one, page_size=1)).next_page_token
    assert token
    for company, bad in ((two, token), (one, "not-a-token"), (one, token[:-2])):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await changes(settings, company, token=bad)
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in error.fields
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await changes(settings, one, page_size=-1)
    assert "page_size" in rich_error(caught.value).fields


async def test_an_oversized_actor_is_refused(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await settings.UpdateBillingSettings(
            pb.UpdateBillingSettingsRequest(
                company_id=company,
                settings=pb.BillingSettings(recharge_amount=usd(20)),
                update_mask=FieldMask(paths=["recharge_amount"]),
                request_id="r1",
            ),
            metadata=(("x-actor", "x" * 201),),
        )
    assert "x-actor" in rich_error(caught.value).fields
