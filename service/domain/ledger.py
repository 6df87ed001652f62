"""What the ledger and the usage records hold, as plain values (use cases return these, never rows)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from service.domain.sms_segments import SmsEncoding
from service.domain.usage_kinds import RateKey, Usage

# Ledger entry types, as stored in ledger_entries.entry_type.
USAGE_DEBIT = "usage_debit"
RECHARGE_CREDIT = "recharge_credit"
PRELOAD_CREDIT = "preload_credit"
MANUAL_CREDIT = "manual_credit"
ADJUSTMENT = "adjustment"
# Corrections: a usage record voided (a credit naming the record), money taken by hand.
USAGE_VOID = "usage_void"
MANUAL_DEBIT = "manual_debit"
ENTRY_TYPES = (
    USAGE_DEBIT,
    RECHARGE_CREDIT,
    PRELOAD_CREDIT,
    MANUAL_CREDIT,
    ADJUSTMENT,
    USAGE_VOID,
    MANUAL_DEBIT,
)


@dataclass(frozen=True)
class LedgerEntry:
    sequence: int
    entry_type: str
    amount_nanos: int
    balance_before_nanos: int
    balance_after_nanos: int
    created_at: datetime
    usage_record_id: uuid.UUID | None
    reference: str | None
    description: str


@dataclass(frozen=True)
class UsageRecord:
    usage_record_id: uuid.UUID
    company_id: str
    idempotency_key: str
    # What was used; an SMS given by its body reads back as its segment count (bodies are not stored).
    usage: Usage
    rate_key: RateKey
    billable_units: int
    unit_price_nanos: int
    amount_nanos: int
    rate_card: str
    rate_card_version: int
    sms_encoding: SmsEncoding | None
    occurred_at: datetime
    recorded_at: datetime
    ledger_sequence: int
    balance_after_nanos: int
    below_minimum: bool
