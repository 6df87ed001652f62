"""StartCardSetup hands out the company's open SetupIntent again instead of making one per request id,
and makes a new one only when the last one is spent (a card was set) or no longer open."""

from __future__ import annotations

import asyncio

from consofta.billing.v1 import settings_service_pb2 as pb

from tests.settings.conftest import StripeWorld


async def _start(world: StripeWorld, company: str, request_id: str) -> pb.StartCardSetupResponse:
    return await world.settings.StartCardSetup(
        pb.StartCardSetupRequest(company_id=company, request_id=request_id)
    )


async def test_new_request_ids_get_the_open_setup_intent_back(stripe_world: StripeWorld) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("reuse")
    first = await _start(world, company, "setup-1")
    others = [await _start(world, company, f"setup-{i}") for i in range(2, 12)]
    assert {o.setup_intent_id for o in others} == {first.setup_intent_id}
    assert {o.client_secret for o in others} == {first.client_secret}
    assert list(fake.setup_intents) == [first.setup_intent_id]


async def test_concurrent_first_setups_make_one_setup_intent(stripe_world: StripeWorld) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("rush")
    replies = await asyncio.gather(*(_start(world, company, f"rush-{i}") for i in range(10)))
    assert len({r.setup_intent_id for r in replies}) == 1
    assert len(fake.setup_intents) == 1


async def test_a_spent_or_closed_setup_intent_is_replaced(stripe_world: StripeWorld) -> None:
    world, fake = stripe_world, stripe_world.fake
    company = await world.new_company("renew")
    first = await _start(world, company, "setup-1")
    # Setting a card spends it: the next setup is a new SetupIntent.
    await world.settings.SetDefaultCard(
        pb.SetDefaultCardRequest(company_id=company, payment_method_id="pm_card_visa", request_id="card-1")
    )
    second = await _start(world, company, "setup-2")
    assert second.setup_intent_id != first.setup_intent_id
    assert (await _start(world, company, "setup-3")).setup_intent_id == second.setup_intent_id
    # One canceled at Stripe (e.g. from the dashboard) is not handed out again either.
    fake.setup_intents[second.setup_intent_id]["status"] = "canceled"
    third = await _start(world, company, "setup-4")
    assert third.setup_intent_id not in (first.setup_intent_id, second.setup_intent_id)
    assert len(fake.setup_intents) == 3
