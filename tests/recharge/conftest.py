"""Fixtures for the auto-recharge tests: fake Stripe, the real provider on it, wallets with cards, loops.

Wallets, settings and cards are written straight into the tables (as SettingsService would leave them)
so these tests do not depend on the settings use cases; debits go through the real record_usage()
SQL function, which sends the real NOTIFY.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from service.domain.money import usd
from service.payments.stripe_provider import StripeProvider
from service.recharge import outcomes
from service.recharge.loop import LoopSettings, RechargeLoop
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, FakeStripe

CALL_MINUTE_NANOS = 14_000_000  # call_outbound_local in the default rate card ($0.014 a minute)

FAST = LoopSettings(
    sweep_interval_s=0.3,
    lease_s=3.0,
    backoff=outcomes.Backoff(retry_backoff_s=(0.3, 0.3, 0.3), unknown_retry_backoff_s=(0.1, 0.2, 0.3)),
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe() as server:
        yield server


def make_stripe(fake: FakeStripe) -> StripeProvider:
    # No library-level retries: each fault reaches our code as OutcomeUnknown, once.
    return StripeProvider(
        api_key=fake.api_key,
        api_base=fake.url,
        webhook_secret=DEFAULT_WEBHOOK_SECRET,
        timeout_s=5.0,
        max_network_retries=0,
    )


@pytest.fixture
async def provider(fake: FakeStripe) -> AsyncIterator[StripeProvider]:
    p = make_stripe(fake)
    yield p
    await p.aclose()


@dataclass(frozen=True)
class Company:
    company_id: str
    customer_id: str
    payment_method_id: str


@dataclass
class Wallets:
    """Creates companies with a wallet, settings and a card, and reads back what the engine did."""

    pool: asyncpg.Pool
    provider: StripeProvider

    async def create(
        self,
        company_id: str | None = None,
        *,
        balance_nanos: int = usd(20),
        minimum_nanos: int = usd(10),
        recharge_nanos: int = usd(50),
        auto: bool = True,
        cap_nanos: int | None = None,
        preload_nanos: int = 0,
        card: str | None = "pm_card_visa",
        first_card: bool = True,
    ) -> Company:
        company_id = company_id or f"co-{uuid.uuid4().hex[:10]}"
        customer_id = payment_method_id = ""
        if card is not None:
            customer_id = await self.provider.create_customer(company_id, f"cus-{company_id}")
            details = await self.provider.attach_payment_method(customer_id, card, f"pm-{company_id}")
            payment_method_id = details.payment_method_id
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into companies (company_id, display_name, create_request_id) values ($1, $1, $1)",
                company_id,
            )
            await conn.execute(
                "insert into wallets (company_id, minimum_balance_nanos) values ($1, $2)",
                company_id,
                minimum_nanos,
            )
            await conn.execute(
                """
                insert into billing_settings (company_id, recharge_amount_nanos, auto_recharge_enabled,
                                              preload_amount_nanos, monthly_recharge_cap_nanos)
                values ($1, $2, $3, $4, $5)
                """,
                company_id,
                recharge_nanos,
                auto,
                preload_nanos,
                cap_nanos,
            )
            if balance_nanos:
                await adjust(conn, company_id, balance_nanos)
            if card is not None:
                await conn.execute(
                    "insert into payment_customers (company_id, provider_customer_id) values ($1, $2)",
                    company_id,
                    customer_id,
                )
                await self._store_card(
                    conn, company_id, details.payment_method_id, details.brand, details.last4
                )
                if first_card:
                    await conn.execute(
                        "update billing_settings set first_card_set_at = now() where company_id = $1",
                        company_id,
                    )
        return Company(company_id, customer_id, payment_method_id)

    @staticmethod
    async def _store_card(
        conn: Any, company_id: str, pm_id: str, brand: str, last4: str, role: str = "primary"
    ) -> None:
        await conn.execute(
            """
            insert into payment_cards (company_id, payment_method_id, brand, last4, exp_month, exp_year, role)
            values ($1, $2, $3, $4, 12, 2099, $5)
            on conflict (company_id, role) do update
               set payment_method_id = excluded.payment_method_id, brand = excluded.brand,
                   last4 = excluded.last4, updated_at = now()
            """,
            company_id,
            pm_id,
            brand,
            last4,
            role,
        )

    async def set_backup(self, company: Company, card: str) -> str:
        """What SetDefaultCard with role BACKUP stores: the attached card beside the primary. Returns
        the attached payment method id."""
        details = await self.provider.attach_payment_method(
            company.customer_id,
            card,
            f"pm-backup-{company.company_id}-{uuid.uuid4().hex[:6]}",
            make_default=False,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await self._store_card(
                conn, company.company_id, details.payment_method_id, details.brand, details.last4, "backup"
            )
        return details.payment_method_id

    async def set_card(self, company: Company, card: str) -> Company:
        """What SettingsService does when a card is set: store it, clear a pause, emit, notify."""
        details = await self.provider.attach_payment_method(
            company.customer_id, card, f"pm-{company.company_id}-{uuid.uuid4().hex[:6]}"
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await self._store_card(
                conn, company.company_id, details.payment_method_id, details.brand, details.last4
            )
            await conn.execute(
                """
                update billing_settings
                   set auto_recharge_paused_reason = null,
                       first_card_set_at = coalesce(first_card_set_at, now())
                 where company_id = $1
                """,
                company.company_id,
            )
            await conn.execute(
                "select emit_wallet_event(p_company_id => $1, p_event_type => 'card_set',"
                " p_payload => '{}'::jsonb)",
                company.company_id,
            )
            await conn.execute("select pg_notify('recharge_wanted', $1)", company.company_id)
        return Company(company.company_id, company.customer_id, details.payment_method_id)

    async def debit_minutes(self, company_id: str, minutes: int) -> asyncpg.Record:
        """A real RecordUsage debit (outbound local call), through the record_usage() SQL function."""
        key = f"usage-{uuid.uuid4().hex}"
        row = await self.pool.fetchrow(
            """
            select * from record_usage(
                p_usage_record_id => $1, p_company_id => $2, p_idempotency_key => $3, p_request_hash => $4,
                p_usage_type => 'call', p_rate_key => 'call_outbound_local', p_direction => 'outbound',
                p_number_type => 'local', p_quantity => $5, p_sms_encoding => null, p_billable_units => $6,
                p_occurred_at => now())
            """,
            uuid.uuid4(),
            company_id,
            key,
            hashlib.sha256(key.encode()).digest(),
            minutes * 60,
            minutes,
        )
        assert row is not None
        return row

    async def balance(self, company_id: str) -> int:
        return int(
            await self.pool.fetchval("select balance_nanos from wallets where company_id = $1", company_id)
        )

    async def credits(self, company_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            """
            select * from ledger_entries
             where company_id = $1 and entry_type in ('recharge_credit', 'preload_credit') order by sequence
            """,
            company_id,
        )

    async def attempts(self, company_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "select * from recharge_attempts where company_id = $1 order by created_at", company_id
        )

    async def events(self, company_id: str, *, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        rows = await self.pool.fetch(
            "select event_type, payload from wallet_events where company_id = $1 order by sequence",
            company_id,
        )
        return [
            (row["event_type"], json.loads(row["payload"]))
            for row in rows
            if row["event_type"].startswith(prefix)
        ]

    async def paused_reason(self, company_id: str) -> str | None:
        return await self.pool.fetchval(
            "select auto_recharge_paused_reason from billing_settings where company_id = $1", company_id
        )


async def adjust(conn: Any, company_id: str, amount_nanos: int) -> None:
    """An opening balance, written as a proper ledger entry so the invariants hold."""
    wallet = await conn.fetchrow(
        "select balance_nanos, last_sequence from wallets where company_id = $1 for update", company_id
    )
    after = wallet["balance_nanos"] + amount_nanos
    await conn.execute(
        """
        insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                    balance_after_nanos, description)
        values ($1, $2, $3, $4, $5, $6, 'opening balance (test)')
        """,
        company_id,
        wallet["last_sequence"] + 1,
        "manual_credit" if amount_nanos > 0 else "adjustment",
        amount_nanos,
        wallet["balance_nanos"],
        after,
    )
    await conn.execute(
        "update wallets set balance_nanos = $2, last_sequence = last_sequence + 1 where company_id = $1",
        company_id,
        after,
    )


@pytest.fixture
def wallets(pool: asyncpg.Pool, provider: StripeProvider) -> Wallets:
    return Wallets(pool, provider)


@pytest.fixture
async def start_loop(
    pool: asyncpg.Pool, provider: StripeProvider, db_url: str
) -> AsyncIterator[Callable[..., Awaitable[RechargeLoop]]]:
    """Start an in-process recharge loop (FAST settings unless given); stopped after the test."""
    started: list[RechargeLoop] = []

    async def start(settings: LoopSettings = FAST) -> RechargeLoop:
        loop = RechargeLoop(pool, provider, db_url, settings)
        await loop.start()
        started.append(loop)
        return loop

    yield start
    for loop in started:
        await loop.stop(grace_s=2)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def charges(fake: FakeStripe, customer_id: str | None = None) -> list[dict[str, Any]]:
    """PaymentIntents the fake Stripe created (for one customer)."""
    return fake.payment_intents_for(customer_id)


def charge_posts(fake: FakeStripe) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path == "/v1/payment_intents"]
