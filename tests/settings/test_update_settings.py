"""GetBillingSettings / UpdateBillingSettings through the real server: defaults, the update mask,
every validation rule, idempotency, and where the minimum balance is stored."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2 as pb
from consofta.billing.v1 import settings_service_pb2_grpc, wallet_service_pb2, wallet_service_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.type.money_pb2 import Money

from service.server import start_server
from tests.conftest import Stubs
from tests.support.config import server_config
from tests.support.rpc import rich_error

# A string: the async stub type exists only in the generated .pyi.
SettingsStub: TypeAlias = "settings_service_pb2_grpc.SettingsServiceAsyncStub"


def usd(units: int, nanos: int = 0, currency: str = "USD") -> Money:
    return Money(currency_code=currency, units=units, nanos=nanos)


async def update(
    settings: SettingsStub,
    company_id: str,
    paths: list[str],
    request_id: str,
    metadata: tuple[tuple[str, str], ...] = (),
    **values: object,
) -> pb.UpdateBillingSettingsResponse:
    return await settings.UpdateBillingSettings(
        pb.UpdateBillingSettingsRequest(
            company_id=company_id,
            settings=pb.BillingSettings(**values),  # type: ignore[arg-type]
            update_mask=FieldMask(paths=paths),
            request_id=request_id,
        ),
        metadata=metadata,
    )


async def violations(call: object) -> dict[str, str]:
    """The field violations of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    return error.fields


async def test_new_company_has_the_documented_defaults(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    got = (await settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))).settings
    assert got.company_id == company
    assert got.minimum_balance == usd(0)
    assert got.recharge_amount == usd(50)
    assert got.preload_amount == usd(50)
    assert got.auto_recharge_enabled is False
    # New companies start capped: a runaway recharge loop can take at most this much in a month.
    assert got.monthly_recharge_cap == usd(5_000)
    assert got.auto_recharge_paused_reason == pb.AUTO_RECHARGE_PAUSED_REASON_UNSPECIFIED
    assert not got.HasField("card")
    assert not got.HasField("first_card_set_at")


async def test_unknown_company_is_not_found(settings: SettingsStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id="nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(settings, "nobody", ["recharge_amount"], "r1", recharge_amount=usd(20))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_update_with_a_mask_changes_only_the_named_fields(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    # Every field carries a (valid) new value, but only recharge_amount is named in the mask.
    response = await update(
        settings,
        company,
        ["recharge_amount"],
        "r1",
        minimum_balance=usd(7),
        recharge_amount=usd(25, 500_000_000),
        auto_recharge_enabled=True,
        preload_amount=usd(30),
        monthly_recharge_cap=usd(900),
    )
    got = response.settings
    assert got.recharge_amount == usd(25, 500_000_000)
    assert got.minimum_balance == usd(0)
    assert got.auto_recharge_enabled is False
    assert got.preload_amount == usd(50)
    assert got.monthly_recharge_cap == usd(5_000)  # the default, unchanged
    again = (await settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))).settings
    assert again == got

    both = await update(
        settings,
        company,
        ["minimum_balance", "monthly_recharge_cap"],
        "r2",
        minimum_balance=usd(12),
        monthly_recharge_cap=usd(100),
        recharge_amount=usd(999),
    )
    assert both.settings.minimum_balance == usd(12)
    assert both.settings.monthly_recharge_cap == usd(100)
    assert both.settings.recharge_amount == usd(25, 500_000_000)


async def test_star_mask_changes_every_writable_field(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    got = (
        await update(
            settings,
            company,
            ["*"],
            "r1",
            minimum_balance=usd(5),
            recharge_amount=usd(40),
            auto_recharge_enabled=True,
            preload_amount=usd(0),
            monthly_recharge_cap=usd(400),
        )
    ).settings
    assert (got.minimum_balance, got.recharge_amount, got.preload_amount, got.monthly_recharge_cap) == (
        usd(5),
        usd(40),
        usd(0),
        usd(400),
    )
    assert got.auto_recharge_enabled is True
    # On without a card: auto-recharge waits for one and says so.
    assert got.auto_recharge_paused_reason == pb.AUTO_RECHARGE_PAUSED_REASON_NO_CARD


async def test_naming_the_cap_without_a_value_clears_it(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    await update(settings, company, ["monthly_recharge_cap"], "r1", monthly_recharge_cap=usd(500))
    cleared = await update(settings, company, ["monthly_recharge_cap"], "r2")
    assert not cleared.settings.HasField("monthly_recharge_cap")


async def test_minimum_balance_is_stored_on_the_wallet(
    stubs: Stubs, settings: SettingsStub, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await update(settings, company, ["minimum_balance"], "r1", minimum_balance=usd(250, 750_000_000))
    stored = await pool.fetchval("select minimum_balance_nanos from wallets where company_id = $1", company)
    assert stored == 250_750_000_000
    wallet = await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
    assert wallet.wallet.minimum_balance == usd(250, 750_000_000)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("recharge_amount", usd(4, 990_000_000), "between $5.00 and $10,000.00, got $4.99"),
        ("recharge_amount", usd(10_000, 10_000_000), "between $5.00 and $10,000.00, got $10,000.01"),
        ("recharge_amount", usd(20, 5_000_000), "whole number of cents, got $20.005"),
        ("recharge_amount", usd(-20), "must not be negative"),
        ("minimum_balance", usd(100_000, 10_000_000), "between $0.00 and $100,000.00"),
        ("minimum_balance", usd(0, -10_000_000), "must not be negative, got -$0.01"),
        ("minimum_balance", usd(1, 1), "whole number of cents, got $1.000000001"),
        ("preload_amount", usd(1), "($0.00 for none) must be between $5.00 and $10,000.00"),
        ("preload_amount", usd(-5), "must not be negative"),
        ("preload_amount", usd(10, 990_000), "whole number of cents"),
        ("monthly_recharge_cap", usd(0), "leave it unset"),
        ("monthly_recharge_cap", usd(-100), "must not be negative"),
        ("monthly_recharge_cap", usd(100, 1_000), "whole number of cents"),
        ("monthly_recharge_cap", usd(49, 990_000_000), "at least the recharge amount ($50.00), got $49.99"),
        ("recharge_amount", usd(20, currency="EUR"), "currency_code must be 'USD', got 'EUR'"),
        ("recharge_amount", usd(20, currency=""), "currency_code must be 'USD'"),
        ("recharge_amount", usd(20, -5), "same sign"),
    ],
)
async def test_each_invalid_value_names_its_field_and_says_why(
    stubs: Stubs, settings: SettingsStub, pool: asyncpg.Pool, field: str, value: Money, says: str
) -> None:
    company = await stubs.new_company()
    fields = await violations(update(settings, company, [field], "r1", **{field: value}))  # type: ignore[arg-type]
    assert list(fields) == [f"settings.{field}"]
    assert says in fields[f"settings.{field}"]
    # Nothing changed, nothing was audited, and the request id is still free for a corrected request.
    assert await pool.fetchval("select count(*) from settings_changes where company_id = $1", company) == 0
    ok_value = {"monthly_recharge_cap": usd(500)}.get(field, usd(20))
    await update(settings, company, [field], "r1", **{field: ok_value})  # type: ignore[arg-type]


async def test_recharge_amount_above_an_existing_cap_is_refused_even_when_only_it_changes(
    stubs: Stubs, settings: SettingsStub
) -> None:
    company = await stubs.new_company()
    await update(settings, company, ["monthly_recharge_cap"], "r1", monthly_recharge_cap=usd(100))
    fields = await violations(update(settings, company, ["recharge_amount"], "r2", recharge_amount=usd(150)))
    assert (
        "must not exceed the monthly recharge cap ($100.00), got $150.00"
        in fields["settings.recharge_amount"]
    )
    # Raising both in one request is fine: the rule holds for the resulting settings.
    both = await update(
        settings,
        company,
        ["recharge_amount", "monthly_recharge_cap"],
        "r3",
        recharge_amount=usd(150),
        monthly_recharge_cap=usd(300),
    )
    assert both.settings.recharge_amount == usd(150)
    # A cap equal to the recharge amount is allowed.
    equal = await update(settings, company, ["monthly_recharge_cap"], "r4", monthly_recharge_cap=usd(150))
    assert equal.settings.monthly_recharge_cap == usd(150)


async def test_every_violation_is_reported_at_once(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    fields = await violations(
        update(
            settings,
            company,
            ["recharge_amount", "minimum_balance", "preload_amount"],
            "r1",
            recharge_amount=usd(1),
            minimum_balance=usd(-1),
            preload_amount=usd(1, 1),
        )
    )
    assert set(fields) == {"settings.recharge_amount", "settings.minimum_balance", "settings.preload_amount"}


@pytest.mark.parametrize(
    ("paths", "says"),
    [
        ([], "is required"),
        (["recharge_amount", "colour"], "names 'colour', which is not a field that can be changed"),
        (["card"], "names 'card', which is read-only"),
        (["auto_recharge_paused_reason"], "read-only"),
        (["recharge_amount.units"], "not a field that can be changed"),
    ],
)
async def test_a_bad_update_mask_is_invalid_argument_naming_update_mask(
    stubs: Stubs, settings: SettingsStub, paths: list[str], says: str
) -> None:
    company = await stubs.new_company()
    fields = await violations(update(settings, company, paths, "r1", recharge_amount=usd(20)))
    assert says in fields["update_mask"]


async def test_a_named_amount_left_unset_is_invalid(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    fields = await violations(update(settings, company, ["recharge_amount"], "r1"))
    assert "named in update_mask but not set" in fields["settings.recharge_amount"]


async def test_settings_company_id_must_match(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    request = pb.UpdateBillingSettingsRequest(
        company_id=company,
        settings=pb.BillingSettings(company_id="other", recharge_amount=usd(20)),
        update_mask=FieldMask(paths=["recharge_amount"]),
        request_id="r1",
    )
    fields = await violations(settings.UpdateBillingSettings(request))
    assert "settings.company_id" in fields


async def test_missing_request_id_is_invalid(stubs: Stubs, settings: SettingsStub) -> None:
    company = await stubs.new_company()
    fields = await violations(update(settings, company, ["recharge_amount"], "", recharge_amount=usd(20)))
    assert "request_id" in fields


async def test_update_is_idempotent_under_its_request_id(
    stubs: Stubs, settings: SettingsStub, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    first = await update(settings, company, ["recharge_amount"], "same", recharge_amount=usd(20))
    # Someone else changes it meanwhile; the retry still answers what the first call did.
    await update(settings, company, ["recharge_amount"], "other", recharge_amount=usd(30))
    retry = await update(settings, company, ["recharge_amount"], "same", recharge_amount=usd(20))
    assert retry.replayed and not first.replayed
    assert retry.settings == first.settings
    current = (await settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))).settings
    assert current.recharge_amount == usd(30)
    assert (
        await pool.fetchval(
            "select count(*) from settings_changes where company_id = $1 and field = 'recharge_amount'",
            company,
        )
        == 2
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(settings, company, ["recharge_amount"], "same", recharge_amount=usd(21))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


async def test_recharge_bounds_come_from_the_deployment_config(db_url: str) -> None:
    env = {"BILLING_RECHARGE_AMOUNT_MIN_USD": "20.00", "BILLING_RECHARGE_AMOUNT_MAX_USD": "500"}
    config = server_config(env)
    app = await start_server(config, database_url=db_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
            await wallets.CreateWallet(
                wallet_service_pb2.CreateWalletRequest(
                    company_id="bounded", display_name="B", request_id="c1"
                )
            )
            settings, company = settings_service_pb2_grpc.SettingsServiceStub(channel), "bounded"
            low = await violations(
                update(settings, company, ["recharge_amount"], "r1", recharge_amount=usd(19))
            )
            assert "between $20.00 and $500.00, got $19.00" in low["settings.recharge_amount"]
            high = await violations(
                update(settings, company, ["recharge_amount"], "r2", recharge_amount=usd(501))
            )
            assert "between $20.00 and $500.00" in high["settings.recharge_amount"]
            ok = await update(settings, company, ["recharge_amount"], "r3", recharge_amount=usd(500))
            assert ok.settings.recharge_amount == usd(500)
    finally:
        await app.stop(grace_s=1)


async def test_concurrent_retries_of_one_update_apply_it_once(
    stubs: Stubs, settings: SettingsStub, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    calls = [
        update(settings, company, ["recharge_amount"], "same", recharge_amount=usd(80)) for _ in range(8)
    ] + [update(settings, company, ["preload_amount"], f"p{i}", preload_amount=usd(10 + i)) for i in range(4)]
    results = await asyncio.gather(*calls)
    assert sum(not r.replayed for r in results[:8]) == 1
    assert {r.settings.recharge_amount.units for r in results[:8]} == {80}
    rows = await pool.fetch(
        "select field, count(*) from settings_changes where company_id = $1 group by field", company
    )
    assert dict((r["field"], r["count"]) for r in rows) == {"recharge_amount": 1, "preload_amount": 4}
