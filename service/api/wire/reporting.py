"""Reports on the wire: usage totals, summaries, statements, rate cards and quotes."""

from __future__ import annotations

from consofta.billing.v1 import reporting_pb2

from service.api.wire.money import money
from service.api.wire.records import set_price
from service.api.wire.timestamps import timestamp
from service.api.wire.usage import category_message
from service.app.reporting.rates import AppliedRate, Estimate
from service.app.reporting.statements import Statement
from service.app.reporting.summaries import Sums, UsageSummary
from service.domain.ledger import LedgerEntry
from service.domain.usage_kinds import CATEGORY_OF_RATE_KEY, RATE_KEYS, RateKey, kind_named


def usage_totals(by_rate_key: dict[RateKey, Sums]) -> list[reporting_pb2.UsageTotal]:
    return [
        reporting_pb2.UsageTotal(
            category=category_message(key),
            record_count=sums.record_count,
            quantity=sums.quantity,
            billable_units=sums.billable_units,
            amount=money(sums.amount_nanos),
            voided_amount=money(sums.voided_nanos),
        )
        for key in RATE_KEYS
        if (sums := by_rate_key.get(key)) is not None
    ]


def summary_response(summary: UsageSummary) -> reporting_pb2.GetUsageSummaryResponse:
    return reporting_pb2.GetUsageSummaryResponse(
        periods=[
            reporting_pb2.UsagePeriod(
                label=p.period.label,
                start_time=timestamp(p.period.start),
                end_time=timestamp(p.period.end),
                totals=usage_totals(p.by_rate_key),
                amount=money(p.amount_nanos),
            )
            for p in summary.periods
        ],
        totals=usage_totals(summary.totals),
        amount=money(summary.amount_nanos),
        voided_amount=money(summary.voided_nanos),
    )


def statement_entry(entry: LedgerEntry) -> reporting_pb2.StatementEntry:
    return reporting_pb2.StatementEntry(
        ledger_sequence=entry.sequence,
        posted_at=timestamp(entry.created_at),
        entry_type=entry.entry_type,
        amount=money(entry.amount_nanos),
        balance_after=money(entry.balance_after_nanos),
        description=entry.description,
        reference=entry.reference or "",
    )


def _entries(entries: list[LedgerEntry]) -> list[reporting_pb2.StatementEntry]:
    return [statement_entry(e) for e in entries]


def _sum(entries: list[LedgerEntry]) -> int:
    return sum(e.amount_nanos for e in entries)


def statement_message(s: Statement) -> reporting_pb2.Statement:
    return reporting_pb2.Statement(
        company_id=s.company_id,
        year=s.year,
        month=s.month,
        time_zone=s.time_zone,
        start_time=timestamp(s.start),
        end_time=timestamp(s.end),
        opening_balance=money(s.opening_balance_nanos),
        closing_balance=money(s.closing_balance_nanos),
        opening_ledger_sequence=s.opening_sequence,
        closing_ledger_sequence=s.closing_sequence,
        usage_debits=usage_totals(s.usage_debits),
        usage_debits_amount=money(s.usage_debits_nanos),
        recharges=_entries(s.recharges),
        recharges_amount=money(_sum(s.recharges)),
        manual_credits=_entries(s.manual_credits),
        manual_credits_amount=money(_sum(s.manual_credits)),
        adjustments=_entries(s.adjustments),
        adjustments_amount=money(_sum(s.adjustments)),
        other_entries=_entries(s.other_entries),
        other_entries_amount=money(_sum(s.other_entries)),
        usage_voids=_entries(s.usage_voids),
        usage_voids_amount=money(_sum(s.usage_voids)),
        manual_debits=_entries(s.manual_debits),
        manual_debits_amount=money(_sum(s.manual_debits)),
    )


def applied_rate(rate: AppliedRate) -> reporting_pb2.AppliedRate:
    kind = kind_named(CATEGORY_OF_RATE_KEY[rate.rate_key].kind)
    assert kind is not None
    return reporting_pb2.AppliedRate(
        category=category_message(rate.rate_key),
        unit=kind.unit,
        unit_price=money(rate.unit_price_nanos),
        rate_card=rate.rate_card,
        rate_card_version=rate.rate_card_version,
        effective_from=timestamp(rate.effective_from),
        company_override=rate.company_override,
    )


def estimate_response(estimate: Estimate) -> reporting_pb2.EstimateCostResponse:
    response = reporting_pb2.EstimateCostResponse(
        repeat_count=estimate.repeat_count,
        total_billable_units=estimate.total_billable_units,
        total_amount=money(estimate.total_amount_nanos),
    )
    set_price(
        response.price,
        estimate.metering.billable_units,
        estimate.unit_price_nanos,
        estimate.amount_nanos,
        estimate.rate_card,
        estimate.rate_card_version,
        estimate.metering.sms_encoding,
    )
    return response
