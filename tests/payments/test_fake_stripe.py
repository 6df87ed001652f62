"""The fake Stripe server's own contract, which later test suites rely on."""

from __future__ import annotations

import time

import httpx
import pytest
import stripe

from tests.support.fake_stripe import FakeStripe, parse_form


def test_parse_form_handles_stripes_bracket_encoding() -> None:
    pairs = [
        ("amount", "2000"),
        ("metadata[attempt_id]", "a-1"),
        ("metadata[company]", "c-9"),
        ("expand[0]", "latest_charge"),
        ("expand[1]", "customer"),
        ("invoice_settings[default_payment_method]", "pm_1"),
        ("tags[]", "x"),
        ("tags[]", "y"),
    ]

    assert parse_form(pairs) == {
        "amount": "2000",
        "metadata": {"attempt_id": "a-1", "company": "c-9"},
        "expand": ["latest_charge", "customer"],
        "invoice_settings": {"default_payment_method": "pm_1"},
        "tags": ["x", "y"],
    }


async def raw_post(fake: FakeStripe, path: str, data: dict[str, str], key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    if key:
        headers["Idempotency-Key"] = key
    async with httpx.AsyncClient(verify=False) as client:
        return await client.post(f"{fake.url}{path}", data=data, headers=headers)


async def test_replays_carry_the_idempotent_replayed_header_and_the_same_body(fake: FakeStripe) -> None:
    first = await raw_post(fake, "/v1/customers", {"metadata[a]": "1"}, "k1")
    second = await raw_post(fake, "/v1/customers", {"metadata[a]": "1"}, "k1")
    conflict = await raw_post(fake, "/v1/customers", {"metadata[a]": "2"}, "k1")

    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert conflict.status_code == 400
    assert conflict.json()["error"]["type"] == "idempotency_error"
    assert len(fake.customers) == 1


async def test_validation_errors_are_not_saved_against_the_key(fake: FakeStripe) -> None:
    """Stripe saves only requests that ran: a corrected retry under the same key must go through."""
    customer = (await raw_post(fake, "/v1/customers", {}, "k-c")).json()["id"]
    too_small = {"amount": "10", "currency": "usd", "customer": customer}

    refused = await raw_post(fake, "/v1/payment_intents", too_small, "k-pi")
    accepted = await raw_post(fake, "/v1/payment_intents", {**too_small, "amount": "100"}, "k-pi")

    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "amount_too_small")
    assert accepted.status_code == 200


async def test_requests_without_the_right_key_are_refused(fake: FakeStripe) -> None:
    async with httpx.AsyncClient(verify=False) as client:
        response = await client.post(
            f"{fake.url}/v1/customers", headers={"Authorization": "Bearer sk_test_nope"}
        )

    assert response.status_code == 401
    assert fake.customers == {}


async def test_unknown_routes_answer_a_stripe_shaped_404(fake: FakeStripe) -> None:
    response = await raw_post(fake, "/v1/not_a_thing", {}, None)

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_fault_switches_match_by_path_and_count_down(fake: FakeStripe) -> None:
    fake.fail_requests(503, path="/v1/customers", times=2, should_retry=True)

    statuses = [(await raw_post(fake, "/v1/customers", {}, f"k{i}")).status_code for i in range(3)]
    other = await raw_post(fake, "/v1/setup_intents", {}, "k-si")

    assert statuses == [503, 503, 200]
    assert other.status_code == 200
    assert fake.requests[0].status == 503


async def test_search_by_metadata_through_the_stripe_library(fake: FakeStripe) -> None:
    http_client = stripe.HTTPXClient(timeout=5, verify_ssl_certs=False)
    client = stripe.StripeClient(
        fake.api_key, base_addresses={"api": fake.url}, http_client=http_client, max_network_retries=0
    )
    customer = await client.v1.customers.create_async({}, options={"idempotency_key": "k-c"})
    for attempt in ("a", "b"):
        await client.v1.payment_intents.create_async(
            {
                "amount": 1_000,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"attempt": attempt},
            },
            options={"idempotency_key": f"k-{attempt}"},
        )

    found = await client.v1.payment_intents.search_async(
        {"query": f"metadata['attempt']:'b' AND customer:'{customer.id}'"}
    )

    await http_client.close_async()
    assert [pi.metadata["attempt"] for pi in found.data] == ["b"]
    assert found.data[0].status == "succeeded"


async def test_stop_does_not_wait_for_a_delayed_answer(fake: FakeStripe) -> None:
    fake.delay_responses(30.0, path="/v1/customers")
    async with httpx.AsyncClient(timeout=0.2, verify=False) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post(f"{fake.url}/v1/customers", headers={"Authorization": f"Bearer {fake.api_key}"})
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 5
