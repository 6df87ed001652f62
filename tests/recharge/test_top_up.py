"""Top up to a target: the recharge brings the available balance up to target_balance, rounded up to a
whole cent, and the monthly cap cuts it in whole cents (pure decisions, then the settings rules)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2 as pb
from consofta.billing.v1 import settings_service_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from service.api.wire.money import money, nanos_of
from service.domain.money import NANOS_PER_CENT, usd
from service.recharge.engine import WalletSnapshot, decide, top_up_amount
from service.recharge.loop import RechargeLoop
from tests.conftest import Stubs
from tests.support.fake_stripe import FakeStripe
from tests.support.rpc import rich_error

from .conftest import Wallets, charges, wait_until

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
BASE = WalletSnapshot(
    balance_nanos=usd(9),
    minimum_balance_nanos=usd(10),
    auto_recharge_enabled=True,
    recharge_amount_nanos=usd(50),
    preload_amount_nanos=0,
    monthly_cap_nanos=None,
    paused_reason=None,
    payment_method_id="pm_1",
    first_card_set=True,
    in_flight_nanos=None,
    preload_succeeded=True,
    charged_this_month_nanos=0,
    cap_block_notified=False,
    last_auto=None,
    last_preload=None,
    top_up_target_nanos=usd(100),
)


def snap(**changes: object) -> WalletSnapshot:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("available", "charged"),
    [
        (usd(9), usd(91)),
        (usd(9) - 1, usd(91) + NANOS_PER_CENT),  # one nano short: a whole cent more
        (usd(9, 990_000_000), usd(90, 10_000_000)),
        (-usd(250), usd(350)),
    ],
)
def test_a_top_up_charges_the_shortfall_to_the_target_rounded_up_to_a_cent(
    available: int, charged: int
) -> None:
    decision = decide(snap(balance_nanos=available), NOW)
    assert decision.charge is not None
    assert (decision.charge.amount_nanos, decision.charge.multiple) == (charged, 1)
    assert decision.charge.amount_nanos % NANOS_PER_CENT == 0
    assert available + decision.charge.amount_nanos >= usd(100)
    assert available + decision.charge.amount_nanos - NANOS_PER_CENT < usd(100)


def test_a_top_up_counts_the_holds() -> None:
    decision = decide(snap(balance_nanos=usd(30), held_nanos=usd(25)), NOW)
    assert decision.charge is not None and decision.charge.amount_nanos == usd(95)


def test_a_top_up_above_the_minimum_charges_nothing() -> None:
    assert decide(snap(balance_nanos=usd(10)), NOW).charge is None


def test_the_monthly_cap_cuts_a_top_up_in_whole_cents() -> None:
    decision = decide(snap(monthly_cap_nanos=usd(500), charged_this_month_nanos=usd(440) - 5), NOW)
    assert decision.charge is not None
    assert decision.charge.amount_nanos == usd(60)  # $60.000000005 of room: whole cents only
    assert decision.cap_block is not None and decision.cap_block.wanted_nanos == usd(91)
    blocked = decide(snap(monthly_cap_nanos=usd(500), charged_this_month_nanos=usd(500)), NOW)
    assert blocked.charge is None and blocked.reason == "monthly_cap_reached"


def test_top_up_amount_never_negative() -> None:
    assert top_up_amount(usd(200), usd(100)) == 0


def _update(
    company: str, request_id: str, paths: list[str], **values: object
) -> pb.UpdateBillingSettingsRequest:
    return pb.UpdateBillingSettingsRequest(
        company_id=company,
        request_id=request_id,
        settings=pb.BillingSettings(**values),  # type: ignore[arg-type]
        update_mask=FieldMask(paths=paths),
    )


async def test_the_mode_and_target_are_set_validated_and_audited(stubs: Stubs) -> None:
    settings = settings_service_pb2_grpc.SettingsServiceStub(stubs.channel)
    company = await stubs.new_company()
    got = (await settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))).settings
    assert got.recharge_mode == pb.RECHARGE_MODE_FIXED_AMOUNT and not got.HasField("target_balance")

    with pytest.raises(grpc.aio.AioRpcError) as no_target:
        await settings.UpdateBillingSettings(
            _update(company, "r1", ["recharge_mode"], recharge_mode=pb.RECHARGE_MODE_TOP_UP_TO_TARGET)
        )
    assert "settings.recharge_mode" in rich_error(no_target.value).fields
    with pytest.raises(grpc.aio.AioRpcError) as too_low:
        await settings.UpdateBillingSettings(
            _update(
                company,
                "r2",
                ["recharge_mode", "target_balance", "minimum_balance"],
                recharge_mode=pb.RECHARGE_MODE_TOP_UP_TO_TARGET,
                target_balance=money(usd(14, 990_000_000)),
                minimum_balance=money(usd(10)),
            )
        )
    assert "settings.target_balance" in rich_error(too_low.value).fields  # needs $10 + $5
    with pytest.raises(grpc.aio.AioRpcError) as fraction:
        await settings.UpdateBillingSettings(
            _update(company, "r3", ["target_balance"], target_balance=money(usd(100) + 1))
        )
    assert "settings.target_balance" in rich_error(fraction.value).fields

    done = await settings.UpdateBillingSettings(
        _update(
            company,
            "r4",
            ["recharge_mode", "target_balance"],
            recharge_mode=pb.RECHARGE_MODE_TOP_UP_TO_TARGET,
            target_balance=money(usd(100)),
        ),
        metadata=(("x-actor", "jane@acme.example"),),
    )
    assert done.settings.recharge_mode == pb.RECHARGE_MODE_TOP_UP_TO_TARGET
    assert nanos_of(done.settings.target_balance) == usd(100)
    trail = await settings.ListSettingsChanges(pb.ListSettingsChangesRequest(company_id=company))
    fields = {(c.field, c.new_value) for c in trail.changes}
    assert {("recharge_mode", "top_up_to_target"), ("target_balance", "100.00")} <= fields


async def test_the_loop_tops_a_wallet_up_to_its_target(
    wallets: Wallets, fake: FakeStripe, start_loop: Callable[..., Awaitable[RechargeLoop]], pool: asyncpg.Pool
) -> None:
    company = await wallets.create(balance_nanos=usd(20), minimum_nanos=usd(10), recharge_nanos=usd(50))
    await pool.execute(
        "update billing_settings set recharge_mode = 'top_up_to_target', target_balance_nanos = $2"
        " where company_id = $1",
        company.company_id,
        usd(120),
    )
    await start_loop()
    await wallets.debit_minutes(company.company_id, 1001)  # $14.014: the balance is $5.986
    await wait_until(lambda: _credited(wallets, company.company_id), what="the top-up credit")
    (charge,) = charges(fake, company.customer_id)
    assert charge["amount"] == 11402  # $114.014 rounded up to the cent: $114.02
    assert await wallets.balance(company.company_id) == usd(120, 6_000_000)


async def _credited(wallets: Wallets, company_id: str) -> bool:
    return bool(await wallets.credits(company_id))
