"""Manual credits: support adds money to a wallet (a goodwill credit or a correction) with a reason.

One round trip to credit_wallet() (migration 0004): lock the wallet, append the ledger entry, store the
credit under its request id, emit the `manual_credit` wallet event, all in one transaction. The admin CLI
calls `credit_wallet` directly; CreditWallet is its gRPC edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

from service.app.hashing import request_hash
from service.domain.errors import CompanyNotFound, FieldViolation, IdempotencyKeyReused, InvalidArgument
from service.domain.money import usd

CreditKind = Literal["manual_credit", "adjustment"]
CREDIT_KINDS: tuple[CreditKind, ...] = ("manual_credit", "adjustment")
# Anything above this in one credit is a slipped digit, not goodwill: support splits a real one.
MAX_CREDIT_NANOS = usd(100_000)
MAX_REASON_CHARS = 500
MAX_ACTOR_CHARS = 200

_CREDIT_SQL = "select (credit).*, replayed from credit_wallet($1, $2, $3, $4, $5, $6, $7)"


@dataclass(frozen=True)
class Credit:
    company_id: str
    request_id: str
    kind: CreditKind
    amount_nanos: int
    reason: str
    actor: str
    ledger_sequence: int
    balance_after_nanos: int
    replayed: bool


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
        found.append(FieldViolation("reason", "is required: say why the money is added"))
    elif len(reason) > MAX_REASON_CHARS:
        found.append(
            FieldViolation("reason", f"is {len(reason)} characters long; the limit is {MAX_REASON_CHARS}")
        )
    elif any(ord(c) < 0x20 and c not in "\n\t" for c in reason):
        found.append(FieldViolation("reason", "must not contain control characters"))
    if not actor.strip() or len(actor) > MAX_ACTOR_CHARS:
        found.append(FieldViolation("actor", f"must be 1 to {MAX_ACTOR_CHARS} characters"))
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in actor):
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
) -> Credit:
    """Credit a wallet once per (company, request id); a replay returns the stored credit."""
    violations = credit_violations(amount_nanos, reason, actor)
    if kind not in CREDIT_KINDS:
        violations.append(FieldViolation("kind", f"must be one of {', '.join(CREDIT_KINDS)}"))
    if violations:
        raise InvalidArgument(violations)
    fingerprint = request_hash(company_id, kind, amount_nanos, reason, actor)
    try:
        row = await pool.fetchrow(
            _CREDIT_SQL, company_id, request_id, fingerprint, kind, amount_nanos, reason, actor
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "BL404":
            raise CompanyNotFound(company_id) from None
        raise
    assert row is not None
    if row["replayed"] and bytes(row["request_hash"]) != fingerprint:
        raise IdempotencyKeyReused(
            f"request id {request_id!r} was already used for a different credit of company {company_id!r}; "
            "nothing was credited",
            metadata={
                "company_id": company_id,
                "request_id": request_id,
                "ledger_sequence": str(row["ledger_sequence"]),
            },
        )
    return Credit(
        company_id=company_id,
        request_id=request_id,
        kind=row["entry_type"],
        amount_nanos=row["amount_nanos"],
        reason=row["reason"],
        actor=row["actor"],
        ledger_sequence=row["ledger_sequence"],
        balance_after_nanos=row["balance_after_nanos"],
        replayed=row["replayed"],
    )
