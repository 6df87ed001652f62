"""The fake Stripe held against Stripe's own published fixtures (`../shared/stripe/fixtures3.json`, the
objects Stripe's mock server returns): every object the fake returns has the fixture's top-level keys
with the same JSON types, every field our provider reads exists in Stripe's objects, and card errors
carry Stripe's documented error shape."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.payments import stripe_answers, stripe_provider, stripe_webhooks
from tests.support.fake_stripe import ChargeOutcome, FakeStripe

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "stripe" / "fixtures3.json"
if not FIXTURES.exists():  # a worktree sits two levels below /work; the main checkout one
    FIXTURES = Path("/work/shared/stripe/fixtures3.json")

# Fields Stripe's API documents as nullable whose fixture example happens to hold a value: null is a
# real answer there (no error yet, no action needed, no charge yet, no customer...).
NULLABLE = {
    "payment_intent": {
        "last_payment_error",
        "next_action",
        "processing",
        "canceled_at",
        "transfer_data",
        "shipping",
        "payment_method_configuration_details",
        "automatic_payment_methods",
    },
    "setup_intent": {
        "last_setup_error",
        "next_action",
        "payment_method_configuration_details",
        "automatic_payment_methods",
    },
    "customer": {"address", "discount", "shipping", "test_clock", "default_source", "currency"},
    "payment_method": {"customer"},
    "event": {"request"},
}
CARD_ERROR_KEYS = ("type", "code", "decline_code", "message", "param", "payment_intent", "doc_url")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _fixtures() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def shape_problems(resource: str, obj: dict[str, Any]) -> list[str]:
    fixture = _fixtures()[resource]
    problems = []
    for key, example in fixture.items():
        if key not in obj:
            problems.append(f"{resource}.{key} is missing (Stripe: {_kind(example)})")
            continue
        actual = obj[key]
        if example is None or (actual is None and key in NULLABLE.get(resource, ())):
            continue
        if _kind(actual) != _kind(example):
            problems.append(f"{resource}.{key} is {_kind(actual)}, Stripe's is {_kind(example)}")
    return problems


async def _post(fake: FakeStripe, path: str, data: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{fake.url}{path}", data=data, headers={"Authorization": f"Bearer {fake.api_key}"}
        )


async def _get(fake: FakeStripe, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{fake.url}{path}", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


@pytest.fixture
async def fake() -> Any:
    async with FakeStripe() as server:
        yield server


async def test_every_object_the_fake_returns_has_stripes_shape(fake: FakeStripe) -> None:
    returned: list[tuple[str, dict[str, Any]]] = []
    customer = (await _post(fake, "/v1/customers", {"metadata[company_id]": "acme"})).json()
    returned.append(("customer", customer))
    setup = await _post(fake, "/v1/setup_intents", {"customer": customer["id"], "usage": "off_session"})
    returned.append(("setup_intent", setup.json()))
    attached = await _post(fake, "/v1/payment_methods/pm_card_visa/attach", {"customer": customer["id"]})
    pm = attached.json()
    returned.append(("payment_method", pm))
    charge = {
        "amount": "5000",
        "currency": "usd",
        "customer": customer["id"],
        "payment_method": pm["id"],
        "confirm": "true",
        "off_session": "true",
        "metadata[recharge_attempt_id]": "a-1",
    }
    for outcome in (ChargeOutcome.succeeded(), ChargeOutcome.processing()):
        fake.program_charge(outcome)
        reply = await _post(fake, "/v1/payment_intents", charge)
        assert reply.status_code == 200, reply.text
        returned.append(("payment_intent", reply.json()))
    fake.program_charge(ChargeOutcome.declined("insufficient_funds"))
    declined = await _post(fake, "/v1/payment_intents", charge)
    assert declined.status_code == 402
    returned.append(("payment_intent", declined.json()["error"]["payment_intent"]))
    returned.append(("customer", await _get(fake, f"/v1/customers/{customer['id']}")))
    returned.append(("payment_intent", await _get(fake, f"/v1/payment_intents/{returned[-2][1]['id']}")))
    returned += [("event", event) for event in fake.events]
    returned += [("payment_intent", event["data"]["object"]) for event in fake.events]

    kinds = {kind for kind, _ in returned}
    assert kinds == {"customer", "setup_intent", "payment_method", "payment_intent", "event"}
    problems = sorted({p for kind, obj in returned for p in shape_problems(kind, obj)})
    assert not problems, "\n".join(problems)
    card_problems = [
        p.replace("payment_method.", "payment_method.card.") for p in shape_problems_of_card(pm["card"])
    ]
    assert not card_problems, "\n".join(card_problems)


def shape_problems_of_card(card: dict[str, Any]) -> list[str]:
    fixture = _fixtures()["payment_method"]["card"]
    return [
        f"payment_method.{key} is {_kind(card.get(key))}, Stripe's is {_kind(example)}"
        for key, example in fixture.items()
        if key not in card
        or (example is not None and card[key] is not None and _kind(card[key]) != _kind(example))
    ]


async def test_a_declined_charge_carries_stripes_error_shape(fake: FakeStripe) -> None:
    customer = (await _post(fake, "/v1/customers", {})).json()
    pm = (await _post(fake, "/v1/payment_methods/pm_card_visa/attach", {"customer": customer["id"]})).json()
    fake.program_charge(ChargeOutcome.declined("insufficient_funds"))
    reply = await _post(
        fake,
        "/v1/payment_intents",
        {"amount": "5000", "currency": "usd", "customer": customer["id"], "payment_method": pm["id"],
         "confirm": "true", "off_session": "true"},
    )  # fmt: skip
    assert reply.status_code == 402
    error = reply.json()["error"]
    assert [key for key in CARD_ERROR_KEYS if key not in error] == []
    assert error["type"] == "card_error"
    assert (error["code"], error["decline_code"]) == ("card_declined", "insufficient_funds")
    assert error["doc_url"].startswith("https://docs.stripe.com/")
    assert error["payment_intent"]["status"] == "requires_payment_method"


# ---- what the provider reads --------------------------------------------------------------------------

# The provider's local names for Stripe objects, and the fixtures that object can be.
_OBJECTS = {
    "intent": ("payment_intent", "setup_intent"),
    "customer": ("customer",),
    "card": ("payment_method.card",),
    "obj": ("payment_intent",),
    "event": ("event",),
    "error": ("payment_intent.last_payment_error",),
}
# Stripe's documented error object (the fixture holds only its `type`).
_ERROR_FIELDS = {"type", "code", "decline_code", "advice_code", "message", "param", "payment_intent",
                 "payment_method", "doc_url", "charge"}  # fmt: skip


def _fixture_keys(name: str) -> set[str]:
    if name == "payment_intent.last_payment_error":
        return _ERROR_FIELDS
    node: Any = _fixtures()
    for part in name.split("."):
        node = node[part]
    return set(node)


def provider_reads() -> set[tuple[str, str]]:
    """(object name, field) for every field read in the Stripe modules of service/payments/: `x.get("f")`,
    `x["f"]` and `x.f` on the local names above (method calls such as `to_dict()` excluded)."""
    trees = [
        ast.parse(Path(m.__file__).read_text()) for m in (stripe_provider, stripe_answers, stripe_webhooks)
    ]
    called = {id(n.func) for tree in trees for n in ast.walk(tree) if isinstance(n, ast.Call)}
    reads = set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner = node.func.value
            if isinstance(owner, ast.Name) and node.args and isinstance(node.args[0], ast.Constant):
                reads.add((owner.id, str(node.args[0].value)))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                reads.add((node.value.id, node.slice.value))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and id(node) not in called:
            reads.add((node.value.id, node.attr))
    return {(owner, name) for owner, name in reads if owner in _OBJECTS}


def test_every_field_the_provider_reads_exists_in_stripes_objects() -> None:
    reads = provider_reads()
    assert ("intent", "status") in reads and ("card", "last4") in reads, reads  # the walk finds reads
    missing = [
        f"{owner}.{name}"
        for owner, name in sorted(reads)
        if not any(name in _fixture_keys(kind) for kind in _OBJECTS[owner])
    ]
    assert not missing, missing
