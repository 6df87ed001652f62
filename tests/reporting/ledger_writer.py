"""Writing ledger history at chosen times, for report fixtures.

RecordUsage stamps everything with now(), so a report that spans months needs history written at chosen
times. These helpers write it through the service's own SQL functions, which take an optional
p_posted_at for exactly this: record_usage() for usage (with the arguments the RecordUsage use case
computes), append_ledger_entry() for credits, emit_wallet_event() for the credit's event. The chain rule
(sequence, balance before and after, the wallet row) is never written here.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from service.app.record_usage import RECORD_USAGE_SQL, RecordUsageCommand, sql_arguments
from service.domain.usage_kinds import Usage

_APPEND_SQL = """
select sequence, balance_after_nanos from append_ledger_entry(
    p_company_id => $1, p_entry_type => $2, p_amount_nanos => $3, p_reference => $4, p_description => $5,
    p_posted_at => $6)
"""

_EMIT_SQL = "select emit_wallet_event(p_company_id => $1, p_event_type => $2, p_payload => $3::jsonb)"

# The use case's own call, with the posting time added as the next argument.
_BACKDATED_SQL = RECORD_USAGE_SQL.rstrip().removesuffix(")") + ", p_posted_at => $14)"


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
    record_id = uuid.uuid4()
    command = RecordUsageCommand(
        company_id=company_id,
        idempotency_key=key or f"backdated-{record_id}",
        usage=used,
        occurred_at_given=occurred_at,
        received_at=occurred_at,
    )
    row = await conn.fetchrow(_BACKDATED_SQL, *sql_arguments(command, record_id), posted_at or occurred_at)
    assert row is not None and row["usage_record_id"] == record_id, "the key was used before"
    return row
