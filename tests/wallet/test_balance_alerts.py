"""Balance alerts: thresholds set through SettingsService (validated, audited), balance_alert in the
debit's own transaction once per crossing, balance_alert_resolved on the way back, in order."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from consofta.billing.v1 import settings_service_pb2, settings_service_pb2_grpc, usage_service_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from service.api.wire.money import money, nanos_of
from service.app.record_usage import RecordUsageCommand, record_usage
from service.domain.money import usd
from service.domain.usage_kinds.email import EmailUsage
from tests.conftest import Stubs
from tests.support.rpc import rich_error
from tests.wallet.conftest import credit, emails, record

# 2,000 emails: $1.35, whole cents as thresholds must be.
UNIT = usd(1, 350_000_000)


def settings_stub(stubs: Stubs) -> settings_service_pb2_grpc.SettingsServiceAsyncStub:
    return settings_service_pb2_grpc.SettingsServiceStub(stubs.channel)


async def set_thresholds(
    stubs: Stubs, company: str, request_id: str, *amounts: int
) -> settings_service_pb2.BillingSettings:
    reply = await settings_stub(stubs).UpdateBillingSettings(
        settings_service_pb2.UpdateBillingSettingsRequest(
            company_id=company,
            request_id=request_id,
            settings=settings_service_pb2.BillingSettings(
                balance_alert_thresholds=[money(a) for a in amounts]
            ),
            update_mask=FieldMask(paths=["balance_alert_thresholds"]),
        ),
        metadata=(("x-actor", "jane@acme.example"),),
    )
    return reply.settings


async def alerts(pool: asyncpg.Pool, company: str) -> list[tuple[str, int, int]]:
    rows = await pool.fetch(
        """
        select event_type, payload from wallet_events
         where company_id = $1 and event_type in ('balance_alert', 'balance_alert_resolved')
         order by sequence
        """,
        company,
    )
    return [
        (r["event_type"], (p := json.loads(r["payload"]))["threshold_nanos"], p["ledger_sequence"])
        for r in rows
    ]


async def debit_emails(stubs: Stubs, company: str, key: str, units: int) -> int:
    reply = await stubs.usage.RecordUsage(record(company, key, emails(2000 * units)))
    return reply.usage_record.ledger_sequence


async def test_thresholds_are_validated_audited_and_returned_in_order(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    saved = await set_thresholds(stubs, company, "t-1", usd(50), usd(10), usd(25))
    assert [nanos_of(m) for m in saved.balance_alert_thresholds] == [usd(10), usd(25), usd(50)]
    got = await settings_stub(stubs).GetBillingSettings(
        settings_service_pb2.GetBillingSettingsRequest(company_id=company)
    )
    assert [nanos_of(m) for m in got.settings.balance_alert_thresholds] == [usd(10), usd(25), usd(50)]
    change = await pool.fetchrow(
        "select old_value, new_value, actor from settings_changes where company_id = $1 and field = $2",
        company,
        "balance_alert_thresholds",
    )
    assert (change["old_value"], change["new_value"], change["actor"]) == (
        "",
        "10.00,25.00,50.00",
        "jane@acme.example",
    )

    for amounts, field in [
        ((usd(1),) * 2, "settings.balance_alert_thresholds"),
        ((usd(1), usd(2), usd(3), usd(4), usd(5), usd(6)), "settings.balance_alert_thresholds"),
        ((usd(1), -usd(1)), "settings.balance_alert_thresholds[1]"),
        ((usd(1, 5_000_000),), "settings.balance_alert_thresholds[0]"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await set_thresholds(stubs, company, f"bad-{len(amounts)}-{amounts[-1]}", *amounts)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in rich_error(bad.value).fields
    cleared = await set_thresholds(stubs, company, "t-clear")
    assert list(cleared.balance_alert_thresholds) == []


async def test_a_debit_crossing_several_thresholds_alerts_each_once_highest_first(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 10 * UNIT)
    await set_thresholds(stubs, company, "t", 8 * UNIT, 5 * UNIT, 2 * UNIT)
    # 10 -> 4: crosses 8 and 5 (not 2), in one debit.
    seq = await debit_emails(stubs, company, "big", 6)
    assert await alerts(pool, company) == [
        ("balance_alert", 8 * UNIT, seq),
        ("balance_alert", 5 * UNIT, seq),
    ]
    # Further debits below 5 but above 2 alert nothing more.
    await debit_emails(stubs, company, "small-1", 1)
    await debit_emails(stubs, company, "small-2", 1)
    assert len(await alerts(pool, company)) == 2
    row = await pool.fetchrow(
        "select payload from wallet_events where company_id = $1 and event_type = 'balance_alert'"
        " order by sequence limit 1",
        company,
    )
    assert json.loads(row["payload"])["balance_nanos"] == 4 * UNIT


async def test_flapping_around_a_threshold_alerts_and_resolves_once_per_crossing(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, 3 * UNIT)
    await set_thresholds(stubs, company, "t", 2 * UNIT)
    expected: list[tuple[str, int, int]] = []
    for i in range(3):
        down = await debit_emails(stubs, company, f"down-{i}", 1)  # 3 -> 2: at the threshold, not below
        assert await alerts(pool, company) == expected
        below = await debit_emails(stubs, company, f"below-{i}", 1)  # 2 -> 1: below
        expected.append(("balance_alert", 2 * UNIT, below))
        up = await credit(stubs, company, 2 * UNIT)  # 1 -> 3: a credit resolves it
        expected.append(("balance_alert_resolved", 2 * UNIT, up.transaction.sequence))
        assert await alerts(pool, company) == expected
        assert down < below


async def test_a_threshold_set_above_the_balance_waits_for_the_balance_to_rise_above_it(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    await credit(stubs, company, UNIT)
    await set_thresholds(stubs, company, "t", 5 * UNIT)
    await debit_emails(stubs, company, "d-1", 1)  # already below: no alert
    assert await alerts(pool, company) == []
    up = await credit(stubs, company, 6 * UNIT)
    assert await alerts(pool, company) == [("balance_alert_resolved", 5 * UNIT, up.transaction.sequence)]
    down = await debit_emails(stubs, company, "d-2", 2)
    assert (await alerts(pool, company))[-1] == ("balance_alert", 5 * UNIT, down)


async def _events_without_ids(pool: asyncpg.Pool, company: str) -> list[tuple[str, dict[str, object]]]:
    rows = await pool.fetch(
        "select event_type, payload from wallet_events where company_id = $1 order by sequence", company
    )
    return [
        (r["event_type"], {k: v for k, v in json.loads(r["payload"]).items() if not k.endswith("_id")})
        for r in rows
    ]


async def test_one_batch_alerts_exactly_as_the_same_debits_one_by_one(
    stubs: Stubs, pool: asyncpg.Pool
) -> None:
    # A batch (record_usages()) notes its alerts set-based; record_usage(), one debit after another,
    # through the per-row trigger.
    # Same debits, same thresholds: the same events, in the same order, and the same state after (the
    # credit at the end resolves exactly the thresholds each path left marked as below).
    one_by_one, batched, neighbour = [await stubs.new_company() for _ in range(3)]
    debits = [1, 3, 1, 4, 1]  # 10 -> 9 (at 9) -> 6 (past 9, 8) -> 5 (at 5) -> 1 (past 5, 2) -> 0
    for company in (one_by_one, batched, neighbour):
        await credit(stubs, company, 10 * UNIT)
        await set_thresholds(stubs, company, "t", 9 * UNIT, 8 * UNIT, 5 * UNIT, 2 * UNIT)
    now = datetime.now(UTC)
    for i, units in enumerate(debits):
        await record_usage(pool, RecordUsageCommand(one_by_one, f"d-{i}", EmailUsage(2000 * units), now, now))
    items = []
    for i, units in enumerate(debits):
        items.append(record(batched, f"d-{i}", emails(2000 * units)))
        items.append(record(neighbour, f"n-{i}", emails(2000 * (5 - units))))  # interleaved, other amounts
    reply = await stubs.usage.RecordUsageBatch(usage_service_pb2.RecordUsageBatchRequest(items=items))
    assert [r.WhichOneof("result") for r in reply.results] == ["recorded"] * len(items)
    for company in (one_by_one, batched):
        await credit(stubs, company, 7 * UNIT, request_id="back-up")  # 0 -> 7: resolves 2 and 5, not 8, 9
    expected = await _events_without_ids(pool, one_by_one)
    down = [(9, 9, 6, 3), (8, 9, 6, 3), (5, 5, 1, 5), (2, 5, 1, 5)]  # threshold, before, after: in UNITs
    assert [e for e in expected if e[0].startswith("balance_alert")] == [
        (
            "balance_alert",
            {"threshold_nanos": t * UNIT, "balance_nanos": after * UNIT,
             "balance_before_nanos": before * UNIT, "ledger_sequence": seq},
        )
        for t, before, after, seq in down
    ] + [
        (
            "balance_alert_resolved",
            {"threshold_nanos": t * UNIT, "balance_nanos": 7 * UNIT, "balance_before_nanos": 0,
             "ledger_sequence": 7},
        )
        for t in (2, 5)
    ]  # fmt: skip
    assert await _events_without_ids(pool, batched) == expected
    # 10 -> 6 -> 4 -> 2 -> 1 -> -3: the neighbour's own crossings, unaffected by the other wallet's.
    assert [(t, p["threshold_nanos"]) for t, p in await _events_without_ids(pool, neighbour)
            if t == "balance_alert"] == [("balance_alert", u * UNIT) for u in (9, 8, 5, 2)]  # fmt: skip
