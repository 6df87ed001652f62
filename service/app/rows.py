"""Database rows -> domain values, for the rows more than one use case reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import asyncpg

from service.domain.ledger import LedgerEntry, UsageRecord
from service.domain.sms_segments import SmsEncoding
from service.domain.usage_kinds import usage_from_stored

Row: TypeAlias = asyncpg.Record | Mapping[str, Any]


def ledger_entry(row: Row) -> LedgerEntry:
    return LedgerEntry(
        sequence=row["sequence"],
        entry_type=row["entry_type"],
        amount_nanos=row["amount_nanos"],
        balance_before_nanos=row["balance_before_nanos"],
        balance_after_nanos=row["balance_after_nanos"],
        created_at=row["created_at"],
        usage_record_id=row["usage_record_id"],
        reference=row["reference"],
        description=row["description"],
    )


def usage_record(row: Row) -> UsageRecord:
    encoding = row["sms_encoding"]
    return UsageRecord(
        usage_record_id=row["usage_record_id"],
        company_id=row["company_id"],
        idempotency_key=row["idempotency_key"],
        usage=usage_from_stored(row["usage_type"], row["rate_key"], row["quantity"]),
        rate_key=row["rate_key"],
        billable_units=row["billable_units"],
        unit_price_nanos=row["unit_price_nanos"],
        amount_nanos=row["amount_nanos"],
        rate_card=row["rate_card"],
        rate_card_version=row["rate_card_version"],
        sms_encoding=None if encoding is None else SmsEncoding(encoding),
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        ledger_sequence=row["ledger_sequence"],
        balance_after_nanos=row["balance_after_nanos"],
        below_minimum=row["below_minimum"],
    )
