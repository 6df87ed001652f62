"""Which payment provider the server uses: the one the operator chose (BILLING_PAYMENT_PROVIDER), never
a default, except that the embedded database implies the sandbox. The sandbox says so at WARNING, is
refused against an external database unless allowed, and its ledger entries say "sandbox"."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2 as pb
from consofta.billing.v1 import settings_service_pb2_grpc, wallet_service_pb2, wallet_service_pb2_grpc

from service.api.transport import AUTH_OFF_WARNING
from service.config import ConfigError, load_config
from service.payments.factory import SANDBOX_WARNING, make_provider
from service.payments.sandbox_provider import SandboxProvider
from service.payments.stripe_provider import StripeProvider
from service.server import start_server
from tests.settings.conftest import every_log_line
from tests.support.config import server_config
from tests.support.fake_stripe import FakeStripe
from tests.support.rpc import rich_error


async def test_without_a_key_the_server_uses_the_sandbox_and_warns_once(db_url: str) -> None:
    config = server_config()
    assert config.stripe_secret_key == ""
    with every_log_line() as captured:
        app = await start_server(config, database_url=db_url)
    try:
        # Auth is off on this loopback test server, which warns too (tests/security covers that).
        warnings = [e for e in captured if e["log_level"] == "warning" and e["event"] != AUTH_OFF_WARNING]
        assert [w["event"] for w in warnings] == [SANDBOX_WARNING]
        assert "NO REAL MONEY MOVES" in SANDBOX_WARNING
        assert isinstance(app.provider, SandboxProvider)

        # And it behaves like Stripe's test mode, with no network at all.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
            settings = settings_service_pb2_grpc.SettingsServiceStub(channel)
            await wallets.CreateWallet(
                wallet_service_pb2.CreateWalletRequest(company_id="sand", display_name="Sand", request_id="c")
            )
            setup = await settings.StartCardSetup(
                pb.StartCardSetupRequest(company_id="sand", request_id="s1")
            )
            assert setup.customer_id.startswith("cus_sandbox_")
            assert setup.client_secret.startswith(f"{setup.setup_intent_id}_secret_")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await settings.SetDefaultCard(
                    pb.SetDefaultCardRequest(
                        company_id="sand", payment_method_id="pm_unknown", request_id="c0"
                    )
                )
            assert rich_error(caught.value).reason == "CARD_REJECTED"
            card = await settings.SetDefaultCard(
                pb.SetDefaultCardRequest(company_id="sand", payment_method_id="pm_card_visa", request_id="c1")
            )
            assert card.first_card
            # The first card's pre-load is charged by the sandbox: its credit says it took no money.
            credit = await _sandbox_credit(db_url, "sand")
            assert "sandbox" in credit["description"] and "sandbox" in credit["reference"]
            assert card.card.payment_method_id.startswith("pm_sandbox_")
            assert (card.card.brand, card.card.last4) == ("visa", "4242")
            removed = await settings.RemoveCard(pb.RemoveCardRequest(company_id="sand", request_id="r1"))
            assert removed.removed_card == card.card
    finally:
        await app.stop(grace_s=1)


async def test_with_a_key_the_stripe_provider_is_used_and_the_key_is_never_logged() -> None:
    async with FakeStripe() as fake:
        config = replace(
            load_config({}),
            payment_provider="stripe",
            stripe_secret_key=fake.api_key,
            stripe_api_base=fake.url,
        )
        with every_log_line() as captured:
            provider = make_provider(config)
        try:
            assert isinstance(provider, StripeProvider)
            assert [e["log_level"] for e in captured] == ["info"]
            assert captured[0]["mode"] == "test"
            assert fake.api_key not in repr(captured) + repr(config) + repr(provider)
            # It really talks to the configured server.
            await provider.create_customer("co-1", "k-1")
            assert len(fake.customers) == 1
        finally:
            await provider.aclose()


def test_the_key_comes_from_the_environment() -> None:
    config = load_config(
        {
            "BILLING_PAYMENT_PROVIDER": "stripe",
            "BILLING_STRIPE_SECRET_KEY": " sk_test_abc ",
            # Required with a key: the service could not verify a webhook without it.
            "BILLING_STRIPE_WEBHOOK_SECRET": "whsec_abc",
            "BILLING_STRIPE_API_BASE": "http://x/",
        }
    )
    assert (config.stripe_secret_key, config.stripe_api_base) == ("sk_test_abc", "http://x")
    assert "sk_test_abc" not in repr(config)


async def _sandbox_credit(db_url: str, company_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(db_url)
    try:
        for _ in range(200):
            row = await conn.fetchrow(
                "select description, reference from ledger_entries"
                " where company_id = $1 and entry_type = 'preload_credit'",
                company_id,
            )
            if row is not None:
                return row
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the pre-load was never credited")


EXTERNAL = {"DATABASE_URL": "postgresql://billing@db.internal:5432/billing"}
STRIPE = {"BILLING_STRIPE_SECRET_KEY": "sk_test_" + "abc", "BILLING_STRIPE_WEBHOOK_SECRET": "whsec_abc"}


@pytest.mark.parametrize(
    ("env", "provider"),
    [
        ({}, "sandbox"),  # the README's `dev.py serve`: embedded database, sandbox
        ({"BILLING_PAYMENT_PROVIDER": "sandbox"}, "sandbox"),
        ({**EXTERNAL, "BILLING_PAYMENT_PROVIDER": "sandbox", "BILLING_ALLOW_SANDBOX": "1"}, "sandbox"),
        ({**EXTERNAL, **STRIPE, "BILLING_PAYMENT_PROVIDER": "stripe"}, "stripe"),
        ({**STRIPE, "BILLING_PAYMENT_PROVIDER": "Stripe"}, "stripe"),
    ],
)
def test_the_provider_is_the_one_chosen(env: dict[str, str], provider: str) -> None:
    assert load_config(env).payment_provider == provider


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (EXTERNAL, "BILLING_PAYMENT_PROVIDER is not set"),
        ({**EXTERNAL, **STRIPE}, "BILLING_PAYMENT_PROVIDER is not set"),
        (STRIPE, "BILLING_PAYMENT_PROVIDER is not"),
        ({**EXTERNAL, "BILLING_PAYMENT_PROVIDER": "sandbox"}, "BILLING_ALLOW_SANDBOX=1"),
        (
            {**EXTERNAL, "BILLING_PAYMENT_PROVIDER": "sandbox", "BILLING_ALLOW_SANDBOX": "yes"},
            "must be 1 or 0",
        ),
        ({"BILLING_PAYMENT_PROVIDER": "stripe"}, "needs BILLING_STRIPE_SECRET_KEY"),
        ({**STRIPE, "BILLING_PAYMENT_PROVIDER": "sandbox"}, "unset one of them"),
        ({"BILLING_PAYMENT_PROVIDER": "paypal"}, "must be stripe or sandbox"),
    ],
)
def test_a_provider_not_chosen_or_not_allowed_stops_the_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert message in str(caught.value)
    assert "abc" not in str(caught.value)


def test_a_hand_built_config_cannot_get_the_sandbox_against_an_external_database() -> None:
    external = replace(load_config({}), database_url=EXTERNAL["DATABASE_URL"])
    with pytest.raises(ConfigError):
        make_provider(external)
    with pytest.raises(ConfigError):
        make_provider(replace(load_config({}), stripe_secret_key="sk_test_" + "abc"))
    assert isinstance(make_provider(replace(external, allow_sandbox=True)), SandboxProvider)
