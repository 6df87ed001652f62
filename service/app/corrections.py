"""Voiding usage: finance reverses a usage record, in full or in part, with a reason and the actor.

One round trip to void_usage_record(): claim the request id, lock the wallet, check what is left of the
record to void, append a `usage_void` ledger entry that names the record (the ledger stays append-only:
the original debit is never touched), store the void, emit `usage_voided`. A record can never be voided
for more than its amount, however the voids are split or raced: the check runs under the wallet lock.

Authorization: the finance role's (service/api/permissions.py). `actor` is who the void is on behalf
of; the authenticated principal is recorded beside it, as for credits and debits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from service.app import idempotency, rows
from service.app.credits import credit_violations
from service.app.db_errors import raise_domain_error
from service.domain.errors import InvalidArgument
from service.domain.ledger import LedgerEntry

VOID_USAGE_RECORD = "void_usage_record"

_VOID_SQL = """
    select (v.void).*, v.record_amount_nanos, v.voided_before_nanos, v.replayed, v.claimed_operation,
           v.claimed_hash
      from void_usage_record(p_company_id => $1, p_request_id => $2, p_request_hash => $3,
                             p_usage_record_id => $4, p_amount_nanos => $5, p_reason => $6, p_actor => $7,
                             p_principal_id => $8) v
"""
_ENTRY_SQL = """
    select sequence, entry_type, amount_nanos, balance_before_nanos, balance_after_nanos, created_at,
           usage_record_id, reference, description
      from ledger_entries where company_id = $1 and sequence = $2
"""
_VOIDED_SQL = """
    select r.amount_nanos, coalesce(sum(v.amount_nanos), 0)::bigint as voided_nanos
      from usage_records r
      left join usage_voids v on v.company_id = r.company_id and v.usage_record_id = r.usage_record_id
     where r.company_id = $1 and r.usage_record_id = $2
     group by r.amount_nanos
"""


@dataclass(frozen=True)
class Void:
    company_id: str
    request_id: str
    usage_record_id: uuid.UUID
    amount_nanos: int
    reason: str
    actor: str
    principal_id: str | None
    # The record's amount, and how much of it is voided now, this void included.
    record_amount_nanos: int
    voided_nanos: int
    # The ledger entry the void appended.
    entry: LedgerEntry
    replayed: bool


async def void_usage_record(
    pool: asyncpg.Pool,
    company_id: str,
    usage_record_id: uuid.UUID,
    reason: str,
    request_id: str,
    actor: str,
    amount_nanos: int | None = None,
    principal_id: str | None = None,
) -> Void:
    """Void `amount_nanos` of a usage record (None: all that is not voided yet), once per request id."""
    violations = credit_violations(1 if amount_nanos is None else amount_nanos, reason, actor)
    if violations:
        raise InvalidArgument(violations)
    request = idempotency.Request(
        VOID_USAGE_RECORD,
        company_id,
        request_id,
        idempotency.fingerprint(company_id, str(usage_record_id), amount_nanos, reason, actor),
    )
    async with pool.acquire() as conn:
        try:
            row = await conn.fetchrow(
                _VOID_SQL,
                company_id,
                request_id,
                request.fingerprint,
                usage_record_id,
                amount_nanos,
                reason,
                actor,
                principal_id,
            )
        except asyncpg.PostgresError as exc:
            raise_domain_error(exc, company_id, usage_record_id=usage_record_id)
        assert row is not None
        if row["replayed"]:
            idempotency.check(request, row["claimed_operation"], row["claimed_hash"])
        entry = await conn.fetchrow(_ENTRY_SQL, company_id, row["ledger_sequence"])
        voided = await conn.fetchrow(_VOIDED_SQL, company_id, row["usage_record_id"])
    assert entry is not None and voided is not None
    return Void(
        company_id=company_id,
        request_id=request_id,
        usage_record_id=row["usage_record_id"],
        amount_nanos=row["amount_nanos"],
        reason=row["reason"],
        actor=row["actor"],
        principal_id=row["principal_id"],
        record_amount_nanos=voided["amount_nanos"],
        voided_nanos=voided["voided_nanos"],
        entry=rows.ledger_entry(entry),
        replayed=row["replayed"],
    )
