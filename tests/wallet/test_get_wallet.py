"""GetWallet: balance, available balance, minimum, status and the last recharge time."""

from __future__ import annotations

import asyncpg
from consofta.billing.v1 import wallet_service_pb2

from service.api.wire.money import nanos_of
from service.domain.money import usd
from tests.conftest import Stubs
from tests.wallet.conftest import add_card, credit, emails, get_wallet, record

W = wallet_service_pb2


async def recharge(pool: asyncpg.Pool, company: str, amount_nanos: int) -> None:
    """A recharge credit written the way the recharge engine must: lock, append, update, emit."""
    async with pool.acquire() as conn, conn.transaction():
        wallet = await conn.fetchrow(
            "select balance_nanos, last_sequence from wallets where company_id = $1 for update", company
        )
        after = wallet["balance_nanos"] + amount_nanos
        await conn.execute(
            """
            insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                        balance_after_nanos, reference)
            values ($1, $2, 'recharge_credit', $3, $4, $5, 'attempt-1')
            """,
            company,
            wallet["last_sequence"] + 1,
            amount_nanos,
            wallet["balance_nanos"],
            after,
        )
        await conn.execute(
            "update wallets set balance_nanos = $2, last_sequence = last_sequence + 1 where company_id = $1",
            company,
            after,
        )
        await conn.execute("select emit_wallet_event($1, 'recharge_succeeded', '{}')", company)


async def test_status_follows_balance_minimum_and_card(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    wallet = await get_wallet(stubs, company)
    assert wallet.status == W.WALLET_STATUS_SUSPENDED  # no money, no card
    assert not wallet.HasField("last_recharge_at")
    assert nanos_of(wallet.available_balance) == 0 and nanos_of(wallet.authorization_floor) == 0
    await add_card(pool, company)
    assert (await get_wallet(stubs, company)).status == W.WALLET_STATUS_ACTIVE
    await pool.execute("update wallets set minimum_balance_nanos = $2 where company_id = $1", company, usd(1))
    assert (await get_wallet(stubs, company)).status == W.WALLET_STATUS_BELOW_MINIMUM
    await recharge(pool, company, usd(2))
    wallet = await get_wallet(stubs, company)
    assert wallet.status == W.WALLET_STATUS_ACTIVE
    assert wallet.HasField("last_recharge_at")
    assert nanos_of(wallet.balance) == usd(2) and nanos_of(wallet.minimum_balance) == usd(1)


async def test_available_balance_subtracts_active_holds(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(2))
    await stubs.wallet.AuthorizeUsage(
        W.AuthorizeUsageRequest(company_id=company, request_id="h", usage=emails(1000))
    )
    await stubs.usage.RecordUsage(record(company, "u", emails(1000)))
    wallet = await get_wallet(stubs, company)
    assert nanos_of(wallet.balance) == usd(2) - usd(0, 675_000_000)
    assert nanos_of(wallet.held) == usd(0, 675_000_000)
    assert nanos_of(wallet.available_balance) == usd(2) - 2 * usd(0, 675_000_000)
