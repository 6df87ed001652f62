"""ListWalletTransactions and CreditWallet through the stubs: paging, filters, reconciliation, credits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import wallet_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.money_pb2 import Money

from service.api.wire.money import money, nanos_of
from service.app.credits import credit_wallet
from service.domain.money import usd
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.wallet.conftest import credit, emails, get_wallet, record

T = wallet_service_pb2


async def list_all(
    stubs: Stubs, company: str, page_size: int = 7, **filters: object
) -> list[wallet_service_pb2.WalletTransaction]:
    seen: list[wallet_service_pb2.WalletTransaction] = []
    token = ""
    while True:
        page = await stubs.wallet.ListWalletTransactions(
            T.ListWalletTransactionsRequest(
                company_id=company,
                page_size=page_size,
                page_token=token,
                **filters,  # type: ignore[arg-type]
            )
        )
        seen.extend(page.transactions)
        token = page.next_page_token
        if not token:
            return seen


async def test_history_is_newest_first_with_types_references_and_balances(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(2), reason="welcome gift")
    used = await stubs.usage.RecordUsage(record(company, "u1", emails(1000)))
    entries = await list_all(stubs, company)
    assert [e.sequence for e in entries] == [2, 1]
    debit, gift = entries
    assert debit.type == T.TRANSACTION_TYPE_USAGE_DEBIT
    assert nanos_of(debit.amount) == -usd(0, 675_000_000)
    assert debit.usage_record_id == used.usage_record.id
    assert nanos_of(debit.balance_after) == usd(2) - usd(0, 675_000_000)
    assert gift.type == T.TRANSACTION_TYPE_MANUAL_CREDIT
    assert gift.description == "welcome gift"
    assert gift.reference.startswith("credit:")


async def test_filters_by_type_and_time_range(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    for i in range(3):
        await stubs.usage.RecordUsage(record(company, f"u{i}", emails(10)))
    debits = await list_all(stubs, company, types=[T.TRANSACTION_TYPE_USAGE_DEBIT])
    assert [e.sequence for e in debits] == [4, 3, 2]
    credits = await list_all(stubs, company, types=[T.TRANSACTION_TYPE_MANUAL_CREDIT])
    assert [e.sequence for e in credits] == [1]
    created = {r["sequence"]: r["created_at"] for r in await pool.fetch("select * from ledger_entries")}
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(created[2])
    end.FromDatetime(created[4])
    window = await list_all(stubs, company, start_time=start, end_time=end)
    assert {e.sequence for e in window} == {s for s, at in created.items() if created[2] <= at < created[4]}
    future = Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    assert await list_all(stubs, company, start_time=future) == []


async def test_paging_while_entries_arrive_skips_and_repeats_nothing(stubs: Stubs) -> None:
    company = await stubs.new_company()
    for i in range(40):
        await stubs.usage.RecordUsage(record(company, f"before-{i}", emails(1)))
    first = await stubs.wallet.ListWalletTransactions(
        T.ListWalletTransactionsRequest(company_id=company, page_size=5)
    )
    top = first.transactions[0].sequence
    seen = [e.sequence for e in first.transactions]
    token = first.next_page_token
    arrivals = 0
    while token:
        # New entries land between every page, from several concurrent clients.
        await asyncio.gather(
            *(stubs.usage.RecordUsage(record(company, f"during-{arrivals}-{j}", emails(1))) for j in range(3))
        )
        arrivals += 3
        page = await stubs.wallet.ListWalletTransactions(
            T.ListWalletTransactionsRequest(company_id=company, page_size=5, page_token=token)
        )
        seen.extend(e.sequence for e in page.transactions)
        token = page.next_page_token
    assert top == 40
    assert seen == list(range(40, 0, -1))
    assert arrivals > 0


async def test_the_list_reconciles_with_the_balance_while_debits_land(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(3))

    async def debits() -> None:
        for batch in range(10):
            await asyncio.gather(
                *(stubs.usage.RecordUsage(record(company, f"d-{batch}-{j}", emails(7 + j))) for j in range(5))
            )

    async def reconcile_repeatedly() -> int:
        checks = 0
        while True:
            entries = await list_all(stubs, company, page_size=9)
            newest = entries[0]
            # Every entry up to the newest one listed is there, and their sum is its balance after.
            assert [e.sequence for e in entries] == list(range(newest.sequence, 0, -1))
            assert sum(nanos_of(e.amount) for e in entries) == nanos_of(newest.balance_after)
            checks += 1
            if newest.sequence == 51:
                return checks

    _, checks = await asyncio.gather(debits(), reconcile_repeatedly())
    assert checks >= 1
    entries = await list_all(stubs, company, page_size=1000)
    assert sum(nanos_of(e.amount) for e in entries) == nanos_of((await get_wallet(stubs, company)).balance)


async def test_bad_list_requests_name_the_field(stubs: Stubs) -> None:
    company = await stubs.new_company()
    other = await stubs.new_company()
    for i in range(3):
        await stubs.usage.RecordUsage(record(company, f"u{i}", emails(1)))
    page = await stubs.wallet.ListWalletTransactions(
        T.ListWalletTransactionsRequest(company_id=company, page_size=1)
    )
    cases = [
        (T.ListWalletTransactionsRequest(company_id=company, page_size=-1), "page_size"),
        (T.ListWalletTransactionsRequest(company_id=company, page_size=1001), "page_size"),
        (T.ListWalletTransactionsRequest(company_id=company, page_token="garbage!"), "page_token"),
        (T.ListWalletTransactionsRequest(company_id=company, page_token="eyJ2IjogMX0"), "page_token"),
        # A token from another query (another company or other filters) is refused, not misapplied.
        (T.ListWalletTransactionsRequest(company_id=other, page_token=page.next_page_token), "page_token"),
        (
            T.ListWalletTransactionsRequest(
                company_id=company, page_token=page.next_page_token, types=[T.TRANSACTION_TYPE_USAGE_DEBIT]
            ),
            "page_token",
        ),
        (
            T.ListWalletTransactionsRequest(company_id=company, types=[T.TRANSACTION_TYPE_UNSPECIFIED]),
            "types[0]",
        ),
        (T.ListWalletTransactionsRequest(company_id=""), "company_id"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.wallet.ListWalletTransactions(request)
        error = rich_error(caught.value)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in error.fields, (field, error.fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.ListWalletTransactions(T.ListWalletTransactionsRequest(company_id="nobody"))
    assert rich_error(caught.value).code is grpc.StatusCode.NOT_FOUND


async def test_a_credit_is_idempotent_and_emits_its_event(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    first = await credit(stubs, company, usd(5), request_id="c-1", reason="outage goodwill")
    again = await credit(stubs, company, usd(5), request_id="c-1", reason="outage goodwill")
    assert again.replayed and not first.replayed
    assert again.transaction == first.transaction
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await credit(stubs, company, usd(6), request_id="c-1", reason="outage goodwill")
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    events = await pool.fetch(
        "select payload from wallet_events where company_id = $1 and event_type = 'manual_credit'",
        company,
    )
    assert len(events) == 1
    assert '"amount_nanos": 5000000000' in events[0]["payload"]
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(5)


async def test_concurrent_credits_under_one_request_id_credit_once(stubs: Stubs) -> None:
    company = await stubs.new_company()
    replies = await asyncio.gather(*(credit(stubs, company, usd(1), request_id="same") for _ in range(10)))
    assert sum(not r.replayed for r in replies) == 1
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(1)


async def test_a_correction_is_an_adjustment_entry(stubs: Stubs) -> None:
    company = await stubs.new_company()
    reply = await stubs.wallet.CreditWallet(
        T.CreditWalletRequest(
            company_id=company,
            amount=money(usd(0, 675_000)),
            reason="email batch billed twice",
            request_id="fix-1",
            kind=T.CREDIT_KIND_CORRECTION,
            actor="agent@consofta.com",
        )
    )
    assert reply.transaction.type == T.TRANSACTION_TYPE_ADJUSTMENT
    assert nanos_of(reply.transaction.amount) == 675_000


async def test_credit_wallet_use_case_for_the_admin_cli(pool: asyncpg.Pool, stubs: Stubs) -> None:
    company = await stubs.new_company()
    done = await credit_wallet(pool, company, usd(3), "migration", "cli-1", kind="adjustment", actor="ops")
    assert (done.kind, done.balance_after_nanos, done.ledger_sequence, done.replayed) == (
        "adjustment",
        usd(3),
        1,
        False,
    )
    assert (await credit_wallet(pool, company, usd(3), "migration", "cli-1", "adjustment", "ops")).replayed


async def test_bad_credits_name_the_field_and_change_nothing(stubs: Stubs) -> None:
    company = await stubs.new_company()

    def req(amount: Money | None, reason: str = "r", request_id: str = "k") -> T.CreditWalletRequest:
        request = T.CreditWalletRequest(company_id=company, reason=reason, request_id=request_id)
        if amount is not None:
            request.amount.CopyFrom(amount)
        return request

    cases = [
        (req(money(-usd(1))), "amount"),
        (req(money(0)), "amount"),
        (req(None), "amount"),
        (req(money(usd(100_001))), "amount"),
        (req(Money(currency_code="EUR", units=5)), "amount"),
        (req(Money(currency_code="USD", units=1, nanos=1_000_000_000)), "amount"),
        (req(Money(currency_code="USD", units=1, nanos=-5)), "amount"),
        (req(money(usd(1)), reason=""), "reason"),
        (req(money(usd(1)), reason="x" * 501), "reason"),
        (req(money(usd(1)), request_id=""), "request_id"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.wallet.CreditWallet(request)
        error = rich_error(caught.value)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in error.fields, (field, error.fields)
    assert (await get_wallet(stubs, company)).last_ledger_sequence == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.CreditWallet(
            T.CreditWalletRequest(company_id="nobody", amount=money(1), reason="r", request_id="k")
        )
    assert rich_error(caught.value).code is grpc.StatusCode.NOT_FOUND
