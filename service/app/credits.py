"""Manual credits and debits: support adds money to a wallet (a goodwill credit or a correction), or
takes it (a manual debit, the pair of a credit), with a reason.

One round trip to credit_wallet(): claim the request id, lock the wallet, append the ledger entry, store
the credit, emit the `manual_credit` (or `manual_debit`) wallet event, all in one transaction. The admin
CLI calls `credit_wallet` directly; CreditWallet and DebitWallet are its gRPC edge. The same rules hold
both ways: a positive amount of at most MAX_CREDIT_NANOS, a reason, an actor, one request id. A manual
debit may take the balance below zero (it corrects usage that happened); it appears on statements as
its own line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

from service.app import idempotency, rows
from service.app.db_errors import raise_domain_error
from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.ledger import LedgerEntry
from service.domain.money import usd
from service.domain.text import has_unprintable

CREDIT_WALLET = "credit_wallet"
CreditKind = Literal["manual_credit", "adjustment", "manual_debit"]
CREDIT_KINDS: tuple[CreditKind, ...] = ("manual_credit", "adjustment")
MANUAL_DEBIT: CreditKind = "manual_debit"
# Anything above this in one credit is a slipped digit, not goodwill: support splits a real one.
MAX_CREDIT_NANOS = usd(100_000)
MAX_REASON_CHARS = 500
MAX_ACTOR_CHARS = 200

_CREDIT_SQL = """
    select (c.credit).*, c.replayed, c.claimed_operation, c.claimed_hash
      from credit_wallet(p_company_id => $1, p_request_id => $2, p_request_hash => $3, p_entry_type => $4,
                         p_amount_nanos => $5, p_reason => $6, p_actor => $7,
                         p_principal_id => $8) c
"""
_ENTRY_SQL = """
    select sequence, entry_type, amount_nanos, balance_before_nanos, balance_after_nanos, created_at,
           usage_record_id, reference, description
      from ledger_entries where company_id = $1 and sequence = $2
"""


@dataclass(frozen=True)
class Credit:
    company_id: str
    request_id: str
    kind: CreditKind
    # Signed as on the ledger: negative for a manual debit.
    amount_nanos: int
    reason: str
    # Who the credit is on behalf of (CreditWallet.actor, the CLI's --actor).
    actor: str
    # The authenticated caller that made it (`key:…`, `mtls:…`, `anonymous`, `cli:<user>`).
    principal_id: str | None
    # The ledger entry the credit appended.
    entry: LedgerEntry
    replayed: bool

    @property
    def ledger_sequence(self) -> int:
        return self.entry.sequence

    @property
    def balance_after_nanos(self) -> int:
        return self.entry.balance_after_nanos


def credit_violations(amount_nanos: int, reason: str, actor: str) -> list[FieldViolation]:
    """What is wrong with a credit's amount, reason and actor; shared by the gRPC edge and the CLI."""
    found = []
    if amount_nanos <= 0:
        found.append(FieldViolation("amount", f"must be more than zero, got {amount_nanos} nanos"))
    elif amount_nanos > MAX_CREDIT_NANOS:
        found.append(
            FieldViolation("amount", f"must be at most {MAX_CREDIT_NANOS // usd(1):,} USD in one credit")
        )
    if not reason.strip():
        found.append(FieldViolation("reason", "is required: say why the money is added or taken"))
    elif len(reason) > MAX_REASON_CHARS:
        found.append(
            FieldViolation("reason", f"is {len(reason)} characters long; the limit is {MAX_REASON_CHARS}")
        )
    elif has_unprintable(reason):
        # One line: the reason is shown in statements, exports and the CLI's tables.
        found.append(FieldViolation("reason", "must be one line without control or format characters"))
    if not actor.strip() or len(actor) > MAX_ACTOR_CHARS:
        found.append(FieldViolation("actor", f"must be 1 to {MAX_ACTOR_CHARS} characters"))
    elif has_unprintable(actor):
        found.append(FieldViolation("actor", "must not contain control characters"))
    return found


async def credit_wallet(
    pool: asyncpg.Pool,
    company_id: str,
    amount_nanos: int,
    reason: str,
    request_id: str,
    kind: CreditKind = "manual_credit",
    actor: str = "api",
    principal_id: str | None = None,
) -> Credit:
    """Credit a wallet once per (company, request id); a replay returns the stored credit."""
    violations = credit_violations(amount_nanos, reason, actor)
    if kind not in CREDIT_KINDS:
        violations.append(FieldViolation("kind", f"must be one of {', '.join(CREDIT_KINDS)}"))
    if violations:
        raise InvalidArgument(violations)
    return await _post(pool, company_id, amount_nanos, reason, request_id, kind, actor, principal_id)


async def debit_wallet(
    pool: asyncpg.Pool,
    company_id: str,
    amount_nanos: int,
    reason: str,
    request_id: str,
    actor: str = "api",
    principal_id: str | None = None,
) -> Credit:
    """Take `amount_nanos` (positive) from a wallet once per (company, request id): the pair of
    `credit_wallet`, under the same rules. The entry and the stored row carry the negative amount."""
    violations = credit_violations(amount_nanos, reason, actor)
    if violations:
        raise InvalidArgument(violations)
    return await _post(pool, company_id, -amount_nanos, reason, request_id, MANUAL_DEBIT, actor, principal_id)


async def _post(
    pool: asyncpg.Pool,
    company_id: str,
    amount_nanos: int,
    reason: str,
    request_id: str,
    kind: CreditKind,
    actor: str,
    principal_id: str | None,
) -> Credit:
    request = idempotency.Request(
        CREDIT_WALLET,
        company_id,
        request_id,
        idempotency.fingerprint(company_id, kind, amount_nanos, reason, actor),
    )
    async with pool.acquire() as conn:
        try:
            row = await conn.fetchrow(
                _CREDIT_SQL,
                company_id,
                request_id,
                request.fingerprint,
                kind,
                amount_nanos,
                reason,
                actor,
                principal_id,
            )
        except asyncpg.PostgresError as exc:
            raise_domain_error(exc, company_id)
        assert row is not None
        if row["replayed"]:
            idempotency.check(request, row["claimed_operation"], row["claimed_hash"])
        entry = await conn.fetchrow(_ENTRY_SQL, company_id, row["ledger_sequence"])
    assert entry is not None
    return Credit(
        company_id=company_id,
        request_id=request_id,
        kind=row["entry_type"],
        amount_nanos=row["amount_nanos"],
        reason=row["reason"],
        actor=row["actor"],
        principal_id=row["principal_id"],
        entry=rows.ledger_entry(entry),
        replayed=row["replayed"],
    )
