"""The card on file end to end: gRPC -> SettingsService -> StripeProvider (the real `stripe` library) ->
the fake Stripe server, with Postgres underneath."""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2 as pb

from service.app.payment_customers import ensure_customer
from service.domain.errors import PaymentProviderUnavailable
from service.payments.stripe_provider import StripeProvider
from tests.settings.conftest import StripeWorld, every_log_line
from tests.support.rpc import rich_error

ACTOR = (("x-actor", "owner@acme.test"),)


async def start_setup(world: StripeWorld, company: str, request_id: str) -> pb.StartCardSetupResponse:
    return await world.settings.StartCardSetup(
        pb.StartCardSetupRequest(company_id=company, request_id=request_id)
    )


async def set_card(world: StripeWorld, company: str, pm: str, request_id: str) -> pb.SetDefaultCardResponse:
    return await world.settings.SetDefaultCard(
        pb.SetDefaultCardRequest(company_id=company, payment_method_id=pm, request_id=request_id),
        metadata=ACTOR,
    )


async def events(pool: asyncpg.Pool, company: str) -> list[tuple[str, dict[str, object]]]:
    rows = await pool.fetch(
        "select event_type, payload from wallet_events where company_id = $1 order by sequence", company
    )
    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


async def card_events(pool: asyncpg.Pool, company: str) -> list[tuple[str, dict[str, object]]]:
    """The card's own events: the server's recharge loop charges the pre-load in between (its
    recharge_* and wallet_* events interleave), which is not what these assertions are about."""
    return [event for event in await events(pool, company) if event[0].startswith("card_")]


async def test_setup_attach_get_remove(stripe_world: StripeWorld, pool: asyncpg.Pool, db_url: str) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("acme")
    listener = await asyncpg.connect(db_url)
    wanted: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("recharge_wanted", lambda *args: wanted.put_nowait(args[3]))
    try:
        # 1. Setup: one customer for the company, a SetupIntent for off-session use, its secret returned.
        setup = await start_setup(world, company, "setup-1")
        assert setup.client_secret.startswith(f"{setup.setup_intent_id}_secret_")
        assert list(fake.customers) == [setup.customer_id]
        assert fake.customers[setup.customer_id]["metadata"] == {"company_id": company}
        intent = fake.setup_intents[setup.setup_intent_id]
        assert (intent["customer"], intent["usage"]) == (setup.customer_id, "off_session")
        # A second setup reuses the customer, and the SetupIntent still open for it.
        second = await start_setup(world, company, "setup-2")
        assert second.customer_id == setup.customer_id and len(fake.customers) == 1
        assert second.setup_intent_id == setup.setup_intent_id
        # Nothing of the secret is stored anywhere.
        dump = await pool.fetchval("select string_agg(t::text, ' ') from idempotency_keys t")
        assert setup.client_secret not in (dump or "")

        # 2. Attach the card Stripe.js made: Stripe's test token materializes as a new pm id.
        result = await set_card(world, company, "pm_card_visa", "card-1")
        card = result.card
        assert result.first_card and not result.replayed
        assert card.payment_method_id.startswith("pm_") and card.payment_method_id != "pm_card_visa"
        assert (card.brand, card.last4, card.exp_month) == ("visa", "4242", 12)
        assert card.fingerprint
        stripe_pm = fake.payment_methods[card.payment_method_id]
        assert stripe_pm["customer"] == setup.customer_id
        assert (
            fake.customers[setup.customer_id]["invoice_settings"]["default_payment_method"]
            == card.payment_method_id
        )
        # Every POST carried a key the service chose.
        assert all(r.idempotency_key and r.idempotency_key.startswith("consofta-") for r in fake.posts())

        # Only the summary is stored.
        stored = await pool.fetchrow("select * from payment_cards where company_id = $1", company)
        assert stored is not None
        assert set(stored.keys()) == {
            "company_id",
            "payment_method_id",
            "brand",
            "last4",
            "exp_month",
            "exp_year",
            "fingerprint",
            "created_at",
            "updated_at",
            "role",
        }
        assert stored["role"] == "primary"
        assert stored["payment_method_id"] == card.payment_method_id

        # The first card turns auto-recharge on, records when, and wakes the recharge engine.
        settings = (
            await world.settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))
        ).settings
        assert settings.auto_recharge_enabled
        assert settings.HasField("first_card_set_at")
        assert settings.auto_recharge_paused_reason == pb.AUTO_RECHARGE_PAUSED_REASON_UNSPECIFIED
        assert settings.card == card
        assert await asyncio.wait_for(wanted.get(), timeout=5) == company
        assert (await card_events(pool, company))[-1] == (
            "card_set",
            {
                "first_card": True,
                "payment_method_id": card.payment_method_id,
                "brand": "visa",
                "last4": "4242",
                "card_role": "primary",
            },
        )

        # A retry of the same request replays; no second attachment at Stripe.
        attachments = len([r for r in fake.posts() if r.path.endswith("/attach")])
        replay = await set_card(world, company, "pm_card_visa", "card-1")
        assert replay.replayed and replay.card == card and replay.first_card
        assert len([r for r in fake.posts() if r.path.endswith("/attach") and not r.replayed]) == attachments

        # 3. Get returns what is stored.
        got = (await world.settings.GetCard(pb.GetCardRequest(company_id=company))).card
        assert got == card

        # 4. Remove: detached at Stripe, forgotten here, auto-recharge paused with the reason.
        removed = await world.settings.RemoveCard(
            pb.RemoveCardRequest(company_id=company, request_id="remove-1"), metadata=ACTOR
        )
        assert removed.removed_card == card
        assert fake.payment_methods[card.payment_method_id]["customer"] is None
        assert await pool.fetchval("select count(*) from payment_cards where company_id = $1", company) == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.settings.GetCard(pb.GetCardRequest(company_id=company))
        assert rich_error(caught.value).reason == "CARD_NOT_FOUND"
        settings = (
            await world.settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))
        ).settings
        assert settings.auto_recharge_paused_reason == pb.AUTO_RECHARGE_PAUSED_REASON_CARD_REMOVED
        assert settings.auto_recharge_paused_detail == "card_removed"
        assert not settings.HasField("card")
        assert (await card_events(pool, company))[-1] == (
            "card_removed",
            {
                "payment_method_id": card.payment_method_id,
                "brand": "visa",
                "last4": "4242",
                "card_role": "primary",
            },
        )
        again = await world.settings.RemoveCard(
            pb.RemoveCardRequest(company_id=company, request_id="remove-1")
        )
        assert again.replayed and again.removed_card == card

        # 5. A new card: not the first, but it lifts the pause and wakes the recharge engine again.
        newer = await set_card(world, company, "pm_card_mastercard", "card-2")
        assert not newer.first_card
        settings = (
            await world.settings.GetBillingSettings(pb.GetBillingSettingsRequest(company_id=company))
        ).settings
        assert settings.auto_recharge_paused_reason == pb.AUTO_RECHARGE_PAUSED_REASON_UNSPECIFIED
        assert await asyncio.wait_for(wanted.get(), timeout=5) == company
        assert (await card_events(pool, company))[-1][1]["first_card"] is False

        # The audit trail tells the story, with the actor.
        listed = (
            await world.settings.ListSettingsChanges(pb.ListSettingsChangesRequest(company_id=company))
        ).changes
        card_rows = [
            (
                c.old_value if c.HasField("old_value") else None,
                c.new_value if c.HasField("new_value") else None,
            )
            for c in reversed(listed)
            if c.field == "card"
        ]
        assert card_rows[0] == (
            None,
            f"visa ending 4242, expires 12/{card.exp_year} ({card.payment_method_id})",
        )
        assert card_rows[1] == (card_rows[0][1], None)
        assert card_rows[2][0] is None and "mastercard ending 4444" in (card_rows[2][1] or "")
        assert {c.actor for c in listed} == {"owner@acme.test"}
        assert {c.field for c in listed} >= {"card", "auto_recharge_enabled", "auto_recharge_paused_reason"}
    finally:
        await listener.close()


async def test_a_rejected_payment_method_stores_nothing(
    stripe_world: StripeWorld, pool: asyncpg.Pool
) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("rejected")
    fake.reject_attach("pm_card_visa", decline_code="lost_card", message="Your card was declined.")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_card(world, company, "pm_card_visa", "card-1")
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "CARD_REJECTED"
    assert "Your card was declined." in error.message
    assert error.metadata["decline_code"] == "lost_card"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_card(world, company, "pm_does_not_exist", "card-2")
    assert rich_error(caught.value).code == grpc.StatusCode.FAILED_PRECONDITION

    assert await pool.fetchval("select count(*) from payment_cards") == 0
    assert await pool.fetchval("select count(*) from settings_changes") == 0
    assert await pool.fetchval("select count(*) from wallet_events where company_id = $1", company) == 0
    assert (
        await pool.fetchval("select count(*) from idempotency_keys where operation = 'set_default_card'") == 0
    )
    row = await pool.fetchrow("select * from billing_settings where company_id = $1", company)
    assert row is not None and row["first_card_set_at"] is None and not row["auto_recharge_enabled"]


async def test_customer_is_created_once_even_when_its_answer_is_lost(
    stripe_world: StripeWorld, pool: asyncpg.Pool
) -> None:
    """A lost answer between Stripe creating the customer and our insert must not make a second
    customer: the key is derived from the company id, so every retry gets the first one back."""
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("flaky")
    # Through the server: the library's own retry (same key) recovers the customer.
    fake.drop_connection(after_commit=True, path="/v1/customers")
    setup = await start_setup(world, company, "setup-1")
    assert list(fake.customers) == [setup.customer_id]

    # Without the library's retry, as after a crash: the call fails, nothing is stored, and the next
    # attempt (a new request) gets the very same customer.
    other = await world.new_company("flaky-2")
    provider = StripeProvider(
        api_key=fake.api_key, api_base=fake.url, webhook_secret="whsec_x", max_network_retries=0
    )
    try:
        fake.drop_connection(after_commit=True, path="/v1/customers")
        with pytest.raises(PaymentProviderUnavailable):
            await ensure_customer(pool, provider, other)
        assert len(fake.customers) == 2
        assert await pool.fetchval("select count(*) from payment_customers where company_id = $1", other) == 0
        customer_id = await ensure_customer(pool, provider, other)
    finally:
        await provider.aclose()
    assert len(fake.customers) == 2
    assert fake.customers[customer_id]["metadata"] == {"company_id": other}
    again = await start_setup(world, other, "setup-2")
    assert again.customer_id == customer_id and len(fake.customers) == 2


async def test_start_card_setup_retry_returns_the_same_setup_intent(stripe_world: StripeWorld) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("retry")
    first = await start_setup(world, company, "setup-1")
    retry = await start_setup(world, company, "setup-1")
    assert retry.replayed and not first.replayed
    assert (retry.setup_intent_id, retry.client_secret) == (first.setup_intent_id, first.client_secret)
    assert len(fake.setup_intents) == 1


async def test_card_calls_for_an_unknown_company_are_not_found(stripe_world: StripeWorld) -> None:
    world = stripe_world
    for call in (
        start_setup(world, "ghost", "r1"),
        set_card(world, "ghost", "pm_card_visa", "r2"),
        world.settings.GetCard(pb.GetCardRequest(company_id="ghost")),
        world.settings.RemoveCard(pb.RemoveCardRequest(company_id="ghost", request_id="r3")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert world.fake.posts() == []


async def test_no_log_line_holds_the_secret_key_or_a_client_secret(
    stripe_world: StripeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world, fake = stripe_world, stripe_world.fake
    caplog.set_level(logging.DEBUG)
    with every_log_line() as captured:
        company = await world.new_company("secrets")
        setups = [await start_setup(world, company, f"setup-{i}") for i in range(2)]
        setups.append(await start_setup(world, company, "setup-0"))  # a replay
        fake.reject_attach("pm_card_chargeDeclinedLostCard", decline_code="lost_card")
        with pytest.raises(grpc.aio.AioRpcError):
            await set_card(world, company, "pm_card_chargeDeclinedLostCard", "card-0")
        card = await set_card(world, company, "pm_card_visa", "card-1")
        await world.settings.GetCard(pb.GetCardRequest(company_id=company))
        await world.settings.RemoveCard(pb.RemoveCardRequest(company_id=company, request_id="remove-1"))
        fake.fail_requests(500, path="/v1/setup_intents", times=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await start_setup(world, company, "setup-9")
    secrets = {fake.api_key, *(s.client_secret for s in setups)}
    secrets |= {s.split("_secret_")[1] for s in secrets if "_secret_" in s}
    lines = [repr(entry) for entry in captured] + [r.getMessage() + repr(r.args) for r in caplog.records]
    assert any("card set" in line for line in lines)  # the capture did see the flow
    assert card.card.payment_method_id
    leaks = [(secret, line) for line in lines for secret in secrets if secret in line]
    assert leaks == []


async def test_two_cards_set_at_once_make_exactly_one_first_card(
    stripe_world: StripeWorld, pool: asyncpg.Pool
) -> None:
    world = stripe_world
    company = await world.new_company("race")
    await start_setup(world, company, "setup-1")  # the customer exists before the race
    results = await asyncio.gather(
        set_card(world, company, "pm_card_visa", "card-a"),
        set_card(world, company, "pm_card_mastercard", "card-b"),
    )
    assert sorted(r.first_card for r in results) == [False, True]
    firsts = [p for kind, p in await events(pool, company) if kind == "card_set" and p["first_card"]]
    assert len(firsts) == 1
    stored = await pool.fetchval("select payment_method_id from payment_cards where company_id = $1", company)
    assert stored in {r.card.payment_method_id for r in results}
