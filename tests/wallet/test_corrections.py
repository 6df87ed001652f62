"""Corrections: a usage record voided in full or in part, never past its amount, and manual debits; the
ledger stays append-only and statements show corrections as lines of their own and still tie out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import reporting_pb2, wallet_service_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from service.api.wire.money import money, nanos_of
from service.domain.money import usd
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.wallet.conftest import credit, get_wallet, outbound_call, record

MINUTE_NANOS = usd(0, 14_000_000)


def void(
    company: str,
    record_id: str,
    request_id: str,
    amount_nanos: int | None = None,
    reason: str = "dropped call",
) -> wallet_service_pb2.VoidUsageRecordRequest:
    request = wallet_service_pb2.VoidUsageRecordRequest(
        company_id=company, usage_record_id=record_id, request_id=request_id, reason=reason, actor="fin@x"
    )
    if amount_nanos is not None:
        request.amount.CopyFrom(money(amount_nanos))
    return request


def debit(company: str, request_id: str, amount_nanos: int) -> wallet_service_pb2.DebitWalletRequest:
    return wallet_service_pb2.DebitWalletRequest(
        company_id=company,
        request_id=request_id,
        amount=money(amount_nanos),
        reason="missed usage",
        actor="fin@x",
    )


async def ten_minute_call(stubs: Stubs, company: str, key: str = "call-1") -> str:
    reply = await stubs.usage.RecordUsage(record(company, key, outbound_call(600)))
    return reply.usage_record.id


async def test_a_record_is_voided_in_parts_and_never_past_its_amount(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(1))
    record_id = await ten_minute_call(stubs, company)
    first = await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-1", 4 * MINUTE_NANOS))
    assert first.transaction.type == wallet_service_pb2.TRANSACTION_TYPE_USAGE_VOID
    assert nanos_of(first.transaction.amount) == 4 * MINUTE_NANOS
    assert first.transaction.usage_record_id == record_id
    assert first.transaction.reference == "void:void-1"
    assert first.transaction.description == "dropped call"
    assert nanos_of(first.voided_amount) == 4 * MINUTE_NANOS
    assert nanos_of(first.record_amount) == 10 * MINUTE_NANOS

    replay = await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-1", 4 * MINUTE_NANOS))
    assert replay.replayed and replay.transaction.sequence == first.transaction.sequence
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-1", 5 * MINUTE_NANOS))
    assert reused.value.code() is grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-2", 6 * MINUTE_NANOS + 1))
    assert too_much.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rich_error(too_much.value).reason == "VOID_EXCEEDS_RECORD"

    rest = await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-3"))
    assert nanos_of(rest.transaction.amount) == 6 * MINUTE_NANOS
    assert nanos_of(rest.voided_amount) == 10 * MINUTE_NANOS
    with pytest.raises(grpc.aio.AioRpcError) as nothing_left:
        await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-4"))
    assert rich_error(nothing_left.value).reason == "VOID_EXCEEDS_RECORD"
    assert nanos_of((await get_wallet(stubs, company)).balance) == usd(1)

    # The original debit is untouched: append-only, the corrections are entries of their own.
    entries = await pool.fetch(
        "select entry_type, amount_nanos, usage_record_id::text as record from ledger_entries"
        " where company_id = $1 order by sequence",
        company,
    )
    assert [(e["entry_type"], e["amount_nanos"]) for e in entries] == [
        ("manual_credit", usd(1)),
        ("usage_debit", -10 * MINUTE_NANOS),
        ("usage_void", 4 * MINUTE_NANOS),
        ("usage_void", 6 * MINUTE_NANOS),
    ]
    assert {e["record"] for e in entries[1:]} == {record_id}


async def test_concurrent_voids_stop_exactly_at_the_records_amount(stubs: Stubs, pool: asyncpg.Pool) -> None:
    company = await stubs.new_company()
    record_id = await ten_minute_call(stubs, company)  # $0.14 debited, the balance goes negative
    results = await asyncio.gather(
        *(
            stubs.wallet.VoidUsageRecord(void(company, record_id, f"v-{i}", usd(0, 10_000_000)))
            for i in range(30)
        ),
        return_exceptions=True,
    )
    done = [r for r in results if isinstance(r, wallet_service_pb2.VoidUsageRecordResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(done) == 14 and len(refused) == 16
    assert all(rich_error(e).reason == "VOID_EXCEEDS_RECORD" for e in refused)
    voided = await pool.fetchval("select sum(amount_nanos) from usage_voids where company_id = $1", company)
    assert voided == 10 * MINUTE_NANOS
    assert nanos_of((await get_wallet(stubs, company)).balance) == 0


async def test_void_checks_its_request_and_the_record(stubs: Stubs) -> None:
    company = await stubs.new_company()
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stubs.wallet.VoidUsageRecord(
            wallet_service_pb2.VoidUsageRecordRequest(company_id=company, usage_record_id="x", request_id="r")
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Every broken rule at once: the id, and the reason the request left out.
    assert set(rich_error(bad.value).fields) == {"usage_record_id", "reason"}
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await stubs.wallet.VoidUsageRecord(
            void(company, "00000000-0000-0000-0000-000000000001", "r", reason="")
        )
    assert set(rich_error(no_reason.value).fields) == {"reason"}
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stubs.wallet.VoidUsageRecord(void(company, "00000000-0000-0000-0000-000000000001", "r"))
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert rich_error(unknown.value).reason == "USAGE_RECORD_NOT_FOUND"
    other = await stubs.new_company()
    record_id = await ten_minute_call(stubs, other)
    with pytest.raises(grpc.aio.AioRpcError) as not_ours:
        await stubs.wallet.VoidUsageRecord(void(company, record_id, "r2"))
    assert not_ours.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_manual_debit_pairs_with_a_credit(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(3))
    taken = await stubs.wallet.DebitWallet(debit(company, "debit-1", usd(5)))
    assert taken.transaction.type == wallet_service_pb2.TRANSACTION_TYPE_MANUAL_DEBIT
    assert nanos_of(taken.transaction.amount) == -usd(5)
    assert nanos_of(taken.transaction.balance_after) == -usd(2)  # usage that happened may overdraw
    again = await stubs.wallet.DebitWallet(debit(company, "debit-1", usd(5)))
    assert again.replayed and again.transaction.sequence == taken.transaction.sequence
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stubs.wallet.DebitWallet(debit(company, "debit-1", usd(6)))
    assert reused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    for amount in (0, -1, usd(100_001)):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stubs.wallet.DebitWallet(debit(company, "debit-2", amount))
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert set(rich_error(bad.value).fields) == {"amount"}
    listed = await stubs.wallet.ListWalletTransactions(
        wallet_service_pb2.ListWalletTransactionsRequest(
            company_id=company, types=[wallet_service_pb2.TRANSACTION_TYPE_MANUAL_DEBIT]
        )
    )
    assert [t.sequence for t in listed.transactions] == [taken.transaction.sequence]


async def test_statements_show_corrections_as_their_own_lines_and_tie_out(stubs: Stubs) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, usd(2))
    record_id = await ten_minute_call(stubs, company)
    await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-1", 3 * MINUTE_NANOS))
    await stubs.wallet.DebitWallet(debit(company, "debit-1", usd(0, 500_000_000)))
    now = datetime.now(UTC)
    reply = await stubs.wallet.GetStatement(
        reporting_pb2.GetStatementRequest(company_id=company, year=now.year, month=now.month, time_zone="UTC")
    )
    s = reply.statement
    assert nanos_of(s.usage_debits_amount) == -10 * MINUTE_NANOS  # as debited, not netted
    assert [nanos_of(e.amount) for e in s.usage_voids] == [3 * MINUTE_NANOS]
    assert s.usage_voids[0].reference == "void:void-1" and s.usage_voids[0].entry_type == "usage_void"
    assert nanos_of(s.usage_voids_amount) == 3 * MINUTE_NANOS
    assert [nanos_of(e.amount) for e in s.manual_debits] == [-usd(0, 500_000_000)]
    assert nanos_of(s.manual_debits_amount) == -usd(0, 500_000_000)
    assert list(s.other_entries) == []
    movements = (
        nanos_of(s.usage_debits_amount)
        + nanos_of(s.manual_credits_amount)
        + nanos_of(s.usage_voids_amount)
        + nanos_of(s.manual_debits_amount)
    )
    assert nanos_of(s.opening_balance) + movements == nanos_of(s.closing_balance)
    assert nanos_of(s.closing_balance) == usd(2) - 7 * MINUTE_NANOS - usd(0, 500_000_000)


async def test_usage_summaries_show_voids_separately_from_the_recorded_amounts(stubs: Stubs) -> None:
    company = await stubs.new_company()
    record_id = await ten_minute_call(stubs, company)
    await ten_minute_call(stubs, company, "call-2")
    await stubs.wallet.VoidUsageRecord(void(company, record_id, "void-1", 3 * MINUTE_NANOS))
    now = datetime.now(UTC)
    reply = await stubs.usage.GetUsageSummary(
        reporting_pb2.GetUsageSummaryRequest(
            company_id=company,
            start_time=Timestamp(seconds=int(now.timestamp()) - 3600),
            end_time=Timestamp(seconds=int(now.timestamp()) + 3600),
            time_zone="UTC",
            grouping=reporting_pb2.SUMMARY_GROUPING_DAY,
        )
    )
    (total,) = reply.totals
    assert total.record_count == 2
    assert nanos_of(total.amount) == 20 * MINUTE_NANOS
    assert nanos_of(total.voided_amount) == 3 * MINUTE_NANOS
    assert nanos_of(reply.voided_amount) == 3 * MINUTE_NANOS
    assert sum(nanos_of(t.voided_amount) for p in reply.periods for t in p.totals) == 3 * MINUTE_NANOS
