"""Writing ledger history at chosen times, for report fixtures.

RecordUsage stamps everything with now(), and the recharge engine belongs to another issue, so a report
that spans months needs history written at chosen times. These helpers follow the crediting rule
exactly (lock the wallet row, append the entry with sequence last_sequence + 1 and balance before/after,
update balance and last_sequence, emit the wallet event, all in one transaction), and price usage the way
record_usage() does (domain metering, effective_rate() for the unit price).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from service.domain.usage_kinds import CallUsage, EmailUsage, SmsUsage, Usage, kind_of, meter


async def _append(
    conn: asyncpg.Connection,
    company_id: str,
    entry_type: str,
    amount_nanos: int,
    posted_at: datetime,
    *,
    usage_record_id: uuid.UUID | None = None,
    reference: str | None = None,
    description: str = "",
) -> tuple[int, int]:
    """Appends one entry under the wallet lock; returns (sequence, balance after)."""
    wallet = await conn.fetchrow(
        "select balance_nanos, last_sequence from wallets where company_id = $1 for update", company_id
    )
    assert wallet is not None
    sequence = wallet["last_sequence"] + 1
    after = wallet["balance_nanos"] + amount_nanos
    await conn.execute(
        "update wallets set balance_nanos = $2, last_sequence = $3, updated_at = now() where company_id = $1",
        company_id,
        after,
        sequence,
    )
    await conn.execute(
        """
        insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                    balance_after_nanos, usage_record_id, reference, description, created_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """,
        company_id,
        sequence,
        entry_type,
        amount_nanos,
        wallet["balance_nanos"],
        after,
        usage_record_id,
        reference,
        description,
        posted_at,
    )
    return sequence, after


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
        sequence, after = await _append(
            conn,
            company_id,
            entry_type,
            amount_nanos,
            posted_at,
            reference=reference,
            description=description,
        )
        await conn.execute(
            "select emit_wallet_event($1, $2, $3::jsonb)",
            company_id,
            "wallet_credited",
            json.dumps({"entry_type": entry_type, "amount_nanos": amount_nanos, "ledger_sequence": sequence,
                        "balance_nanos": after, "reference": reference}),
        )  # fmt: skip
    return sequence


async def usage(
    conn: asyncpg.Connection,
    company_id: str,
    used: Usage,
    occurred_at: datetime,
    posted_at: datetime | None = None,
    key: str | None = None,
) -> asyncpg.Record:
    """A usage record and its debit, as record_usage() writes them, but posted at `posted_at`."""
    metering = meter(used)
    match used:
        case EmailUsage(count=count):
            quantity = count
        case CallUsage(duration_seconds=seconds):
            quantity = seconds
        case SmsUsage():
            quantity = metering.billable_units
    posted = posted_at or occurred_at
    record_id = uuid.uuid4()
    async with conn.transaction():
        rate = await conn.fetchrow(
            "select * from effective_rate($1, $2, $3)", company_id, metering.rate_key, occurred_at
        )
        assert rate is not None and rate["unit_price_nanos"] is not None
        amount = metering.billable_units * rate["unit_price_nanos"]
        sequence, after = await _append(
            conn, company_id, "usage_debit", -amount, posted, usage_record_id=record_id
        )
        return await conn.fetchrow(
            """
            insert into usage_records (usage_record_id, company_id, idempotency_key, request_hash, usage_type,
                                       rate_key, direction, number_type, quantity, sms_encoding,
                                       billable_units, unit_price_nanos, amount_nanos, rate_card,
                                       rate_card_version, occurred_at, recorded_at, ledger_sequence,
                                       balance_after_nanos, below_minimum)
            values ($1, $2, $3, '\\x00', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                    false)
            returning *
            """,
            record_id,
            company_id,
            key or f"backdated-{record_id}",
            kind_of(used).name,
            metering.rate_key,
            None if isinstance(used, EmailUsage) else used.direction.value,
            used.number_type.value if isinstance(used, CallUsage) else None,
            quantity,
            None if metering.sms_encoding is None else metering.sms_encoding.value,
            metering.billable_units,
            rate["unit_price_nanos"],
            amount,
            rate["rate_card"],
            rate["rate_card_version"],
            occurred_at,
            posted,
            sequence,
            after,
        )
