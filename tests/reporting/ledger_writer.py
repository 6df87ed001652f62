"""Writing ledger history at chosen times, for report fixtures.

RecordUsage stamps everything with now(), so a report that spans months needs history written at chosen
times. These helpers write it through the service's own SQL functions, which take an optional
p_posted_at for exactly this: record_usage() for usage (with the metering and fingerprint RecordUsage
computes), append_ledger_entry() for credits, emit_wallet_event() for the credit's event. The chain rule
(sequence, balance before and after, the wallet row) is never written here.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from service.app.record_usage import RecordUsageCommand, _fingerprint, _quantity
from service.domain.pricing import meter
from service.domain.usage import CallUsage, EmailUsage, Usage

_APPEND_SQL = """
select sequence, balance_after_nanos from append_ledger_entry(
    p_company_id => $1, p_entry_type => $2, p_amount_nanos => $3, p_reference => $4, p_description => $5,
    p_posted_at => $6)
"""

_EMIT_SQL = "select emit_wallet_event(p_company_id => $1, p_event_type => $2, p_payload => $3::jsonb)"

_RECORD_USAGE_SQL = """
select * from record_usage(
    p_usage_record_id => $1, p_company_id => $2, p_idempotency_key => $3, p_request_hash => $4,
    p_usage_type => $5, p_rate_key => $6, p_direction => $7, p_number_type => $8, p_quantity => $9,
    p_sms_encoding => $10, p_billable_units => $11, p_occurred_at => $12, p_posted_at => $13)
"""


async def credit(
    conn: asyncpg.Connection,
    company_id: str,
    entry_type: str,
    amount_nanos: int,
    posted_at: datetime,
    *,
    reference: str | None = None,
    description: str = "",
) -> int:
    """A recharge_credit / preload_credit / manual_credit / adjustment posted at `posted_at`; its sequence."""
    async with conn.transaction():
        entry = await conn.fetchrow(
            _APPEND_SQL, company_id, entry_type, amount_nanos, reference, description, posted_at
        )
        assert entry is not None
        await conn.execute(
            _EMIT_SQL,
            company_id,
            "wallet_credited",
            json.dumps({"entry_type": entry_type, "amount_nanos": amount_nanos,
                        "ledger_sequence": entry["sequence"], "balance_nanos": entry["balance_after_nanos"],
                        "reference": reference}),
        )  # fmt: skip
    return int(entry["sequence"])


async def usage(
    conn: asyncpg.Connection,
    company_id: str,
    used: Usage,
    occurred_at: datetime,
    posted_at: datetime | None = None,
    key: str | None = None,
) -> asyncpg.Record:
    """A usage record and its debit, written by record_usage(), but posted at `posted_at`."""
    metering = meter(used)
    record_id = uuid.uuid4()
    idempotency_key = key or f"backdated-{record_id}"
    command = RecordUsageCommand(
        company_id=company_id,
        idempotency_key=idempotency_key,
        usage=used,
        occurred_at_given=occurred_at,
        received_at=occurred_at,
    )
    row = await conn.fetchrow(
        _RECORD_USAGE_SQL,
        record_id,
        company_id,
        idempotency_key,
        _fingerprint(command),
        used.usage_type.value,
        metering.rate_key.value,
        None if isinstance(used, EmailUsage) else used.direction.value,
        used.number_type.value if isinstance(used, CallUsage) else None,
        _quantity(used, metering.billable_units),
        None if metering.sms_encoding is None else metering.sms_encoding.value,
        metering.billable_units,
        occurred_at,
        posted_at or occurred_at,
    )
    assert row is not None and row["usage_record_id"] == record_id, "the key was used before"
    return row
