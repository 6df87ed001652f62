"""The ledger and rate cards on a real Postgres, through the RecordUsage use case."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from service.app.record_usage import RecordUsageCommand, record_usage
from service.app.wallets import create_wallet
from service.domain.errors import CompanyNotFound, IdempotencyKeyReused
from service.domain.usage_kinds import Direction, EmailUsage, SmsUsage

NOW = datetime.now(UTC)


async def _company(pool: asyncpg.Pool, company_id: str = "acme") -> str:
    await create_wallet(pool, company_id, company_id.title(), f"create-{company_id}")
    return company_id


def _cmd(
    company: str, key: str, usage: EmailUsage | SmsUsage, at: datetime | None = None
) -> RecordUsageCommand:
    return RecordUsageCommand(company, key, usage, at, NOW)


async def _add_card(
    pool: asyncpg.Pool, company: str | None, version: int, start: datetime, rates: dict[str, int]
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        card_id = await conn.fetchval(
            "insert into rate_cards (company_id, version, effective_from) values ($1, $2, $3)"
            " returning rate_card_id",
            company,
            version,
            start,
        )
        await conn.executemany(
            "insert into rate_card_rates (rate_card_id, rate_key, unit_price_nanos) values ($1, $2, $3)",
            [(card_id, key, price) for key, price in rates.items()],
        )


async def test_ledger_rejects_update_delete_and_truncate(pool: asyncpg.Pool) -> None:
    company = await _company(pool)
    await record_usage(pool, _cmd(company, "k", EmailUsage(1)))
    for statement in (
        "update ledger_entries set amount_nanos = 0",
        "delete from ledger_entries",
        "truncate ledger_entries cascade",
    ):
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await pool.execute(statement)
    assert await pool.fetchval("select count(*) from ledger_entries") == 1


async def test_each_entry_records_amount_balance_and_sequence(pool: asyncpg.Pool) -> None:
    company = await _company(pool)
    await record_usage(pool, _cmd(company, "a", EmailUsage(2)))
    await record_usage(pool, _cmd(company, "b", EmailUsage(3)))
    rows = await pool.fetch(
        "select sequence, amount_nanos, balance_before_nanos, balance_after_nanos, entry_type"
        " from ledger_entries where company_id = $1 order by sequence",
        company,
    )
    assert [tuple(r) for r in rows] == [
        (1, -1_350_000, 0, -1_350_000, "usage_debit"),
        (2, -2_025_000, -1_350_000, -3_375_000, "usage_debit"),
    ]


async def test_a_new_rate_card_version_applies_from_its_start_and_past_usage_keeps_its_price(
    pool: asyncpg.Pool,
) -> None:
    company = await _company(pool)
    start = NOW - timedelta(days=1)
    await _add_card(
        pool,
        None,
        2,
        start,
        {
            "email": 1_000_000,
            "call_outbound_local": 1,
            "call_outbound_toll_free": 1,
            "call_inbound_local": 1,
            "call_inbound_toll_free": 1,
            "sms_outbound": 1,
            "sms_inbound": 1,
        },
    )
    before = await record_usage(pool, _cmd(company, "old", EmailUsage(1), start - timedelta(seconds=1)))
    after = await record_usage(pool, _cmd(company, "new", EmailUsage(1), start))
    assert (before.record.unit_price_nanos, before.record.rate_card_version) == (675_000, 1)
    assert (after.record.unit_price_nanos, after.record.rate_card_version) == (1_000_000, 2)
    # The record billed at version 1 still says so: versions are immutable, and records keep their price.
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("update rate_card_rates set unit_price_nanos = 5")
    stored = await pool.fetchval(
        "select amount_nanos from usage_records where idempotency_key = 'old' and company_id = $1", company
    )
    assert stored == 675_000


async def test_a_company_card_overrides_only_the_rates_it_lists(pool: asyncpg.Pool) -> None:
    company = await _company(pool)
    other = await _company(pool, "other")
    await _add_card(pool, company, 1, NOW - timedelta(days=2), {"sms_outbound": 5_000_000})
    cheap_sms = await record_usage(pool, _cmd(company, "s", SmsUsage(Direction.OUTBOUND, segments=2)))
    email = await record_usage(pool, _cmd(company, "e", EmailUsage(1)))
    others_sms = await record_usage(pool, _cmd(other, "s", SmsUsage(Direction.OUTBOUND, segments=2)))
    assert (cheap_sms.record.amount_nanos, cheap_sms.record.rate_card) == (10_000_000, company)
    assert (email.record.amount_nanos, email.record.rate_card) == (675_000, "default")
    assert (others_sms.record.amount_nanos, others_sms.record.rate_card) == (15_800_000, "default")


async def test_unknown_company_and_key_reuse_leave_no_trace(pool: asyncpg.Pool) -> None:
    company = await _company(pool)
    with pytest.raises(CompanyNotFound):
        await record_usage(pool, _cmd("ghost", "k", EmailUsage(1)))
    await record_usage(pool, _cmd(company, "k", EmailUsage(1)))
    with pytest.raises(IdempotencyKeyReused):
        await record_usage(pool, _cmd(company, "k", EmailUsage(2)))
    assert await pool.fetchval("select count(*) from usage_records") == 1
    assert await pool.fetchval("select balance_nanos from wallets where company_id = $1", company) == -675_000


async def test_create_wallet_is_idempotent_under_its_request_id(pool: asyncpg.Pool) -> None:
    first = await create_wallet(pool, "acme", "Acme", "req-1")
    again = await create_wallet(pool, "acme", "Acme", "req-1")
    assert not first.replayed and again.replayed
    from service.domain.errors import CompanyExists

    with pytest.raises(CompanyExists):
        await create_wallet(pool, "acme", "Acme", "req-2")
    with pytest.raises(IdempotencyKeyReused):
        await create_wallet(pool, "acme", "Acme Renamed", "req-1")
    # A request id is scoped to its company, like every other request id: another company's is its own.
    other = await create_wallet(pool, "other", "Other", "req-1")
    assert not other.replayed


async def test_the_debit_crossing_below_the_minimum_emits_one_event_and_a_notification(
    pool: asyncpg.Pool,
) -> None:
    company = await _company(pool)  # balance 0, minimum 0: the first debit crosses below
    heard: list[str] = []
    listener = await pool.acquire()
    try:

        def on_notify(*args: object) -> None:
            heard.append(str(args[3]))

        await listener.add_listener("wallet_below_minimum", on_notify)
        crossing = await record_usage(pool, _cmd(company, "a", EmailUsage(1)))
        await record_usage(pool, _cmd(company, "b", EmailUsage(1)))  # already below: no second event
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.02)
        await listener.remove_listener("wallet_below_minimum", on_notify)
    finally:
        await pool.release(listener)
    assert heard == [company]
    events = await pool.fetch(
        "select sequence, event_type, payload from wallet_events where company_id = $1", company
    )
    assert [(e["sequence"], e["event_type"]) for e in events] == [(1, "balance_below_minimum")]
    assert json.loads(events[0]["payload"])["usage_record_id"] == str(crossing.record.usage_record_id)
