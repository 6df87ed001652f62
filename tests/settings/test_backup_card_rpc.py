"""The backup card through SettingsService: SetDefaultCard / GetCard / RemoveCard with `role`, over gRPC,
the real `stripe` library and the fake Stripe, Postgres underneath."""

from __future__ import annotations

import json

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2 as pb

from tests.settings.conftest import StripeWorld
from tests.support.rpc import rich_error

ACTOR = (("x-actor", "owner@acme.test"),)
BACKUP = pb.CARD_ROLE_BACKUP


async def set_card(
    world: StripeWorld,
    company: str,
    pm: str,
    request_id: str,
    role: pb.CardRole.ValueType = pb.CARD_ROLE_UNSPECIFIED,
) -> pb.SetDefaultCardResponse:
    return await world.settings.SetDefaultCard(
        pb.SetDefaultCardRequest(company_id=company, payment_method_id=pm, request_id=request_id, role=role),
        metadata=ACTOR,
    )


async def card_events(pool: asyncpg.Pool, company: str) -> list[tuple[str, dict[str, object]]]:
    rows = await pool.fetch(
        "select event_type, payload from wallet_events where company_id = $1 and event_type like 'card_%'"
        " order by sequence",
        company,
    )
    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


async def test_set_get_remove_a_backup_card(stripe_world: StripeWorld, pool: asyncpg.Pool) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("acme")
    primary = (await set_card(world, company, "pm_card_visa", "card-1")).card
    assert primary.role == pb.CARD_ROLE_PRIMARY

    # A backup: stored beside the primary, not the first card, nothing else changes.
    paused_before = await pool.fetchval(
        "select auto_recharge_paused_reason from billing_settings where company_id = $1", company
    )
    result = await set_card(world, company, "pm_card_mastercard", "backup-1", BACKUP)
    backup = result.card
    assert backup.role == pb.CARD_ROLE_BACKUP and backup.last4 == "4444" and not result.first_card
    assert backup.payment_method_id != primary.payment_method_id
    customer = fake.payment_methods[backup.payment_method_id]["customer"]
    assert customer is not None
    # Attached, but the customer's default stays the primary.
    assert fake.customers[customer]["invoice_settings"]["default_payment_method"] == primary.payment_method_id
    assert (
        await pool.fetchval(
            "select auto_recharge_paused_reason from billing_settings where company_id = $1", company
        )
        == paused_before
    )
    got = await world.settings.GetCard(pb.GetCardRequest(company_id=company))
    assert got.card == primary and got.backup_card == backup
    assert (await card_events(pool, company))[-1] == (
        "card_set",
        {
            "payment_method_id": backup.payment_method_id,
            "brand": "mastercard",
            "last4": "4444",
            "card_role": "backup",
            "first_card": False,
        },
    )
    # Audited like every setting.
    changes = await world.settings.ListSettingsChanges(pb.ListSettingsChangesRequest(company_id=company))
    audited = [c for c in changes.changes if c.field == "backup_card"]
    assert len(audited) == 1 and audited[0].new_value.startswith("mastercard ending 4444")
    assert audited[0].actor == "owner@acme.test" and audited[0].request_id == "backup-1"

    # Idempotent under the request id: a retry replays, with no second attachment.
    attaches = len([r for r in fake.posts() if r.path.endswith("/attach") and not r.replayed])
    replay = await set_card(world, company, "pm_card_mastercard", "backup-1", BACKUP)
    assert replay.replayed and replay.card == backup
    assert len([r for r in fake.posts() if r.path.endswith("/attach") and not r.replayed]) == attaches
    # The same request id for the primary role is another request: refused, not replayed.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_card(world, company, "pm_card_mastercard", "backup-1")
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert rich_error(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"

    # Remove the backup: detached, forgotten; the primary and the settings stay.
    removed = await world.settings.RemoveCard(
        pb.RemoveCardRequest(company_id=company, request_id="remove-backup", role=BACKUP), metadata=ACTOR
    )
    assert removed.removed_card == backup
    assert fake.payment_methods[backup.payment_method_id]["customer"] is None
    got = await world.settings.GetCard(pb.GetCardRequest(company_id=company))
    assert got.card == primary and not got.HasField("backup_card")
    assert (
        await pool.fetchval(
            "select auto_recharge_paused_reason from billing_settings where company_id = $1", company
        )
        == paused_before
    )
    again = await world.settings.RemoveCard(
        pb.RemoveCardRequest(company_id=company, request_id="remove-backup", role=BACKUP)
    )
    assert again.replayed and again.removed_card == backup
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.settings.RemoveCard(
            pb.RemoveCardRequest(company_id=company, request_id="remove-backup-2", role=BACKUP)
        )
    assert rich_error(caught.value).reason == "CARD_NOT_FOUND"


async def test_the_primary_cannot_be_its_own_backup_and_a_backup_set_as_primary_moves(
    stripe_world: StripeWorld, pool: asyncpg.Pool
) -> None:
    world = stripe_world
    company = await world.new_company("acme")
    primary = (await set_card(world, company, "pm_card_visa", "card-1")).card
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_card(world, company, primary.payment_method_id, "backup-same", BACKUP)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "payment_method_id" in (caught.value.details() or "")

    backup = (await set_card(world, company, "pm_card_mastercard", "backup-1", BACKUP)).card
    moved = (await set_card(world, company, backup.payment_method_id, "card-2")).card
    assert moved.payment_method_id == backup.payment_method_id and moved.role == pb.CARD_ROLE_PRIMARY
    got = await world.settings.GetCard(pb.GetCardRequest(company_id=company))
    assert got.card.payment_method_id == backup.payment_method_id and not got.HasField("backup_card")
    roles = await pool.fetch("select role from payment_cards where company_id = $1", company)
    assert [r["role"] for r in roles] == ["primary"]


async def test_a_role_this_server_does_not_know_is_invalid_argument_naming_role(
    stripe_world: StripeWorld,
) -> None:
    world = stripe_world
    company = await world.new_company("acme")
    unknown = pb.CardRole.ValueType(7)
    for call in (
        world.settings.SetDefaultCard(
            pb.SetDefaultCardRequest(
                company_id=company, payment_method_id="pm_card_visa", request_id="r", role=unknown
            )
        ),
        world.settings.RemoveCard(pb.RemoveCardRequest(company_id=company, request_id="r", role=unknown)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "role" in (caught.value.details() or "")
