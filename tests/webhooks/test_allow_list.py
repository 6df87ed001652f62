"""The allow-list: what may be registered, and what is refused again at delivery time after DNS."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import webhook_service_pb2 as pb

from service.app.webhook_endpoints import create_endpoint
from service.domain.money import usd
from service.domain.webhook_hosts import HostListError, check_url, parse_allowed_hosts, refused_addresses
from service.webhooks.deliverer import Deliverer, DeliverySettings, pinned
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.support.webhook_receiver import Receiver
from tests.webhooks.conftest import Hooks


async def _refused(hooks: Hooks, url: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.endpoint(url)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = rich_error(caught.value).fields
    assert set(fields) == {"url"}, fields
    return fields["url"]


async def test_registration_refuses_hosts_off_the_list_and_names_that_resolve_inside(hooks: Hooks) -> None:
    # The server's list is "127.0.0.1": another loopback address is not on it.
    assert "does not allow" in await _refused(hooks, "http://127.0.0.2:9/hook")
    # A name that is not listed, and one that would need plain http without being listed.
    assert "does not allow" in await _refused(hooks, "https://localhost/hook")
    assert "https" in await _refused(hooks, "ftp://127.0.0.1/hook")
    assert "credentials" in await _refused(hooks, "http://user:pw@127.0.0.1:9/hook")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.hooks.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                url="http://127.0.0.1:9/x", event_types=["Bad Type"], request_id="r"
            )
        )
    assert set(rich_error(caught.value).fields) == {"event_types[0]"}


async def test_a_listed_name_that_resolves_to_loopback_is_refused(pool: asyncpg.Pool) -> None:
    allowed = parse_allowed_hosts("localhost")
    with pytest.raises(Exception) as caught:
        await create_endpoint(pool, allowed, "r-1", "http://localhost:9/hook", (), None, "", "test")
    assert "resolves to" in str(caught.value) and "not a public address" in str(caught.value)
    # Listing the address as well lets it through.
    both = parse_allowed_hosts("localhost,127.0.0.1,::1")
    created = await create_endpoint(pool, both, "r-2", "http://localhost:9/hook", (), None, "", "test")
    assert created.endpoint.url == "http://localhost:9/hook"


async def test_with_no_list_nothing_can_be_registered(stubs: Stubs) -> None:
    from consofta.billing.v1 import webhook_service_pb2_grpc

    hooks = webhook_service_pb2_grpc.WebhookServiceStub(stubs.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooks.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(url="https://hooks.example.com/x", request_id="r-1")
        )
    assert "BILLING_WEBHOOK_ALLOWED_HOSTS is unset" in rich_error(caught.value).fields["url"]


async def test_delivery_rechecks_the_list_and_sends_nothing_when_it_no_longer_allows(
    stubs: Stubs, pool: asyncpg.Pool, db_url: str, receiver: Receiver
) -> None:
    # Registered while the address was listed; the deliverer runs with a list that allows only the name.
    await create_endpoint(pool, parse_allowed_hosts("127.0.0.1"), "r-1", receiver.url, (), None, "", "t")
    company = await stubs.new_company()
    from tests.wallet.conftest import credit

    await credit(stubs, company, usd(1))
    deliverer = Deliverer(
        pool, db_url, DeliverySettings(parse_allowed_hosts("localhost"), backoff_base_s=0.05)
    )
    await deliverer.start()
    try:
        for _ in range(100):
            rows = await pool.fetch("select attempts, last_error, state, last_status from webhook_deliveries")
            if any(r["attempts"] >= 2 for r in rows):
                break
            await asyncio.sleep(0.05)
    finally:
        await deliverer.stop()
    tried = [r for r in rows if r["attempts"]]
    assert tried and all(r["last_error"].startswith("refused: url has host") for r in tried)
    # The company's later event waits behind the refused one (order per company).
    assert len(rows) == 2 and len(tried) == 1 and all(r["state"] == "pending" for r in rows)
    assert receiver.received == []


def test_a_request_goes_to_the_checked_address_under_its_original_name() -> None:
    # Pinned: the name is resolved and checked once per attempt, and the connection goes to what was
    # checked; the receiver still sees its own name (Host), and TLS verifies the certificate for it.
    url, host, extensions = pinned("https://Hooks.Example.com:8443/in?x=1", "203.0.113.7")
    assert (str(url), host, extensions) == (
        "https://203.0.113.7:8443/in?x=1", "hooks.example.com:8443", {"sni_hostname": "hooks.example.com"},
    )  # fmt: skip
    url, host, extensions = pinned("http://localhost:9/hook", "::1")
    assert (str(url), host, extensions) == ("http://[::1]:9/hook", "localhost:9", {})


async def test_a_name_is_delivered_to_through_its_checked_addresses_with_its_host_header(
    stubs: Stubs, pool: asyncpg.Pool, db_url: str, receiver: Receiver
) -> None:
    # localhost may resolve to ::1 first while the receiver listens on 127.0.0.1 only: the checked
    # addresses are tried in the resolver's order, as a client connecting by name would.
    allowed = parse_allowed_hosts("localhost,127.0.0.1,::1")
    url = f"http://localhost:{receiver.port}/hook"
    await create_endpoint(pool, allowed, "r-1", url, ("manual_credit",), None, "", "t")
    company = await stubs.new_company()
    from tests.wallet.conftest import credit

    await credit(stubs, company, usd(1))
    deliverer = Deliverer(pool, db_url, DeliverySettings(allowed, backoff_base_s=0.05))
    await deliverer.start()
    try:
        await receiver.wait_for(lambda got: len(got) >= 1)
    finally:
        await deliverer.stop()
    (got,) = receiver.received
    assert got.headers["Host"] == f"localhost:{receiver.port}"
    assert got.event["type"] == "manual_credit"


async def test_a_name_that_answers_differently_after_the_check_is_not_followed(
    stubs: Stubs, pool: asyncpg.Pool, db_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: a resolver (the test's, small and honest) that gives the listed address when the
    # allow-list checks the name and another address afterwards. The request goes where the check
    # said; a second resolution would have sent it to 192.0.2.1.
    real = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host: object, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            asked.append(host)
            host = "127.0.0.1" if len(asked) == 1 else "192.0.2.1"
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    allowed = parse_allowed_hosts("rebind.test,127.0.0.1")
    url = f"http://rebind.test:{receiver.port}/hook"
    await create_endpoint(pool, allowed, "r-1", url, ("manual_credit",), None, "", "t")
    asked.clear()  # registration resolved it too
    company = await stubs.new_company()
    from tests.wallet.conftest import credit

    await credit(stubs, company, usd(1))
    deliverer = Deliverer(pool, db_url, DeliverySettings(allowed, backoff_base_s=0.05, timeout_s=2.0))
    await deliverer.start()
    try:
        await receiver.wait_for(lambda got: len(got) >= 1)
    finally:
        await deliverer.stop()
    assert receiver.received[0].headers["Host"] == f"rebind.test:{receiver.port}"
    assert asked == ["rebind.test"]  # resolved once, for the check


def test_list_entries_and_matching() -> None:
    allowed = parse_allowed_hosts(" Hooks.Example.com, *.corp.example, 10.1.0.0/16, ::1 ")
    assert allowed.host_matches("hooks.example.com") and allowed.listed_exactly("hooks.example.com")
    assert allowed.host_matches("a.corp.example") and not allowed.host_matches("corp.example")
    assert not allowed.listed_exactly("a.corp.example")
    assert allowed.host_matches("10.1.2.3") and not allowed.host_matches("10.2.0.1")
    assert not allowed.host_matches("evil.example.com")
    target, why = check_url("http://a.corp.example/x", allowed)
    assert target is None and why is not None and "https" in why  # a wildcard never allows plain http
    assert refused_addresses(["10.1.9.9", "::1", "8.8.8.8"], allowed) == []
    assert refused_addresses(["10.2.0.1", "169.254.169.254", "::ffff:127.0.0.1"], allowed) == [
        "10.2.0.1", "169.254.169.254", "::ffff:127.0.0.1",
    ]  # fmt: skip
    public = parse_allowed_hosts("*")
    assert public.host_matches("anything.example") and not public.listed_exactly("anything.example")
    assert refused_addresses(["127.0.0.1", "192.168.1.1", "100.64.0.1"], public) == [
        "127.0.0.1", "192.168.1.1", "100.64.0.1",
    ]  # fmt: skip
    assert not parse_allowed_hosts("").enabled and not parse_allowed_hosts(None).enabled
    for bad in ("http://x", "10.0.0.1/8", "a b", "*.", "-x.com"):
        with pytest.raises(HostListError):
            parse_allowed_hosts(bad)
    assert ipaddress.ip_address("100.64.0.1").is_global is False
