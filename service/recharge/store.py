"""The recharge engine's SQL: plan attempts, claim work, record outcomes, credit wallets once.

Every function here owns one short transaction and never calls the payment provider: the loop calls
the provider between transactions, so no transaction or row lock is ever held across a network call.
All times come from the database clock (``now()``), the one clock every replica shares.

Lock order, everywhere: recharge_attempts row, then the wallet row (RecordUsage takes only the wallet
row; planning takes the wallet row and then only inserts an attempt). No path takes them the other way
round while holding the wallet row, so there is no lock cycle.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from service.payments.provider import ChargeResult, ChargeStatus

from . import engine
from .engine import Kind, Outcome, Status

log = structlog.get_logger(__name__)

# A connection of our own or one borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy

# The metadata key set on every PaymentIntent; reconciliation finds a charge by it.
ATTEMPT_METADATA_KEY = "recharge_attempt_id"
NON_FINAL = ("pending", "processing")


def idempotency_key(attempt_id: uuid.UUID) -> str:
    """The provider idempotency key of an attempt: derived from its id, so every retry reuses it."""
    return f"recharge-{attempt_id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt_id: uuid.UUID
    company_id: str
    kind: Kind
    amount_nanos: int
    status: Status
    provider_customer_id: str
    payment_method_id: str
    card_brand: str
    card_last4: str
    retry_number: int
    call_count: int
    payment_intent_id: str | None
    created_at: dt.datetime
    # The database clock when the attempt was read (claim time).
    now: dt.datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | asyncpg.Record) -> Attempt:
        return cls(
            attempt_id=row["attempt_id"],
            company_id=row["company_id"],
            kind=Kind(row["kind"]),
            amount_nanos=row["amount_nanos"],
            status=Status(row["status"]),
            provider_customer_id=row["provider_customer_id"],
            payment_method_id=row["payment_method_id"],
            card_brand=row["card_brand"],
            card_last4=row["card_last4"],
            retry_number=row["retry_number"],
            call_count=row["call_count"],
            payment_intent_id=row["payment_intent_id"],
            created_at=row["created_at"],
            now=row["now"],
        )

    @property
    def metadata(self) -> dict[str, str]:
        return {ATTEMPT_METADATA_KEY: str(self.attempt_id), "company_id": self.company_id, "kind": self.kind}

    @property
    def description(self) -> str:
        what = "Pre-load" if self.kind is Kind.PRELOAD else "Auto-recharge"
        return f"Consofta wallet {what.lower()} for {self.company_id}"


@dataclass(frozen=True, slots=True)
class Planned:
    decision: engine.Decision
    attempt_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Recorded:
    company_id: str
    status: Status
    # False when the attempt had already moved on (a webhook or another process got there first).
    changed: bool
    credited: bool = False


async def _emit(conn: Conn, company_id: str, event_type: str, payload: dict[str, Any]) -> None:
    await conn.execute(
        "select emit_wallet_event($1, $2, $3::jsonb)",
        company_id,
        event_type,
        json.dumps(payload, default=str),
    )


def _card_label(brand: str, last4: str) -> str:
    return f"{brand.replace('_', ' ').title()} •••• {last4}"


# ---- planning ------------------------------------------------------------------------------------

_SNAPSHOT_SQL = """
    select w.balance_nanos, w.minimum_balance_nanos, now() as now,
           coalesce(s.auto_recharge_enabled, false) as auto_recharge_enabled,
           s.recharge_amount_nanos, coalesce(s.preload_amount_nanos, 0) as preload_amount_nanos,
           s.monthly_recharge_cap_nanos, s.auto_recharge_paused_reason, s.first_card_set_at,
           s.recharge_blocked_by_cap_at,
           c.payment_method_id, c.brand, c.last4, pc.provider_customer_id
      from wallets w
      left join billing_settings s using (company_id)
      left join payment_cards c using (company_id)
      left join payment_customers pc using (company_id)
     where w.company_id = $1
       for update of w
"""

_ATTEMPTS_SQL = """
    select
        (select amount_nanos from recharge_attempts
          where company_id = $1 and status in ('pending', 'processing')) as in_flight_nanos,
        exists (select 1 from recharge_attempts
                 where company_id = $1 and kind = 'preload' and status = 'succeeded') as preload_succeeded,
        (select coalesce(sum(amount_nanos), 0) from recharge_attempts
          where company_id = $1 and kind = 'auto' and created_at >= $2
            and status in ('pending', 'processing', 'succeeded')) as charged_this_month_nanos
"""

_LAST_FINAL_SQL = """
    select distinct on (kind) kind, status, retry_number, next_attempt_at, payment_method_id
      from recharge_attempts
     where company_id = $1 and status not in ('pending', 'processing')
     order by kind, created_at desc
"""


async def plan_recharge(conn: Conn, company_id: str) -> Planned:
    """Decide under the wallet row lock whether to charge now; if so, create and COMMIT the attempt.

    The attempt row (and its recharge_started event) commit before this returns, so it exists before
    the provider is ever called: a crash after this point leaves a pending attempt that
    reconciliation finishes with the same idempotency key, never a charge the database does not know.
    """
    async with conn.transaction():
        wallet = await conn.fetchrow(_SNAPSHOT_SQL, company_id)
        if wallet is None:
            return Planned(engine.Decision(None, None, "no_wallet"), None)
        now: dt.datetime = wallet["now"]
        counts = await conn.fetchrow(_ATTEMPTS_SQL, company_id, engine.month_start(now))
        assert counts is not None
        last: dict[str, engine.LastAttempt] = {
            row["kind"]: engine.LastAttempt(
                status=Status(row["status"]),
                retry_number=row["retry_number"],
                retry_at=row["next_attempt_at"],
                payment_method_id=row["payment_method_id"],
            )
            for row in await conn.fetch(_LAST_FINAL_SQL, company_id)
        }
        has_card = wallet["payment_method_id"] is not None and wallet["provider_customer_id"] is not None
        snapshot = engine.WalletSnapshot(
            balance_nanos=wallet["balance_nanos"],
            minimum_balance_nanos=wallet["minimum_balance_nanos"],
            auto_recharge_enabled=wallet["auto_recharge_enabled"]
            and wallet["recharge_amount_nanos"] is not None,
            recharge_amount_nanos=wallet["recharge_amount_nanos"] or 0,
            preload_amount_nanos=wallet["preload_amount_nanos"],
            monthly_cap_nanos=wallet["monthly_recharge_cap_nanos"],
            paused_reason=wallet["auto_recharge_paused_reason"],
            payment_method_id=wallet["payment_method_id"] if has_card else None,
            first_card_set=wallet["first_card_set_at"] is not None,
            in_flight_nanos=counts["in_flight_nanos"],
            preload_succeeded=counts["preload_succeeded"],
            charged_this_month_nanos=int(counts["charged_this_month_nanos"]),
            cap_block_notified=wallet["recharge_blocked_by_cap_at"] is not None,
            last_auto=last.get(Kind.AUTO),
            last_preload=last.get(Kind.PRELOAD),
        )
        decision = engine.decide(snapshot, now)

        block = decision.cap_block
        if block is not None and block.notify:
            await conn.execute(
                "update billing_settings set recharge_blocked_by_cap_at = now() where company_id = $1",
                company_id,
            )
            await _emit(
                conn,
                company_id,
                "recharge_blocked_by_cap",
                {
                    "wanted_nanos": block.wanted_nanos,
                    "allowed_nanos": block.allowed_nanos,
                    "monthly_cap_nanos": block.cap_nanos,
                    "charged_this_month_nanos": block.charged_this_month_nanos,
                    "balance_nanos": snapshot.balance_nanos,
                    "minimum_balance_nanos": snapshot.minimum_balance_nanos,
                },
            )
        if decision.clear_cap_block:
            await conn.execute(
                "update billing_settings set recharge_blocked_by_cap_at = null where company_id = $1",
                company_id,
            )
        charge = decision.charge
        if charge is None:
            return Planned(decision, None)

        attempt_id = uuid.uuid4()
        await conn.execute(
            """
            insert into recharge_attempts (attempt_id, company_id, kind, amount_nanos, provider_customer_id,
                                           payment_method_id, card_brand, card_last4, retry_number,
                                           next_attempt_at)
            values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
            """,
            attempt_id,
            company_id,
            charge.kind.value,
            charge.amount_nanos,
            wallet["provider_customer_id"],
            wallet["payment_method_id"],
            wallet["brand"],
            wallet["last4"],
            charge.retry_number,
        )
        await _emit(
            conn,
            company_id,
            "recharge_started",
            {
                "attempt_id": str(attempt_id),
                "kind": charge.kind.value,
                "amount_nanos": charge.amount_nanos,
                "multiple": charge.multiple,
                "retry_number": charge.retry_number,
                "balance_nanos": snapshot.balance_nanos,
                "minimum_balance_nanos": snapshot.minimum_balance_nanos,
                "card": _card_label(wallet["brand"], wallet["last4"]),
            },
        )
    log.info(
        "recharge attempt created",
        company_id=company_id,
        attempt_id=str(attempt_id),
        kind=charge.kind.value,
        amount_nanos=charge.amount_nanos,
    )
    return Planned(decision, attempt_id)


_CANDIDATES_SQL = """
    select w.company_id
      from wallets w
      join billing_settings s using (company_id)
      join payment_cards c using (company_id)
      join payment_customers pc using (company_id)
     where s.auto_recharge_paused_reason is null
       and ((s.auto_recharge_enabled and w.balance_nanos < w.minimum_balance_nanos)
            or (s.first_card_set_at is not null and s.preload_amount_nanos > 0
                and not exists (select 1 from recharge_attempts a
                                 where a.company_id = w.company_id and a.kind = 'preload'
                                   and a.status = 'succeeded')))
       and not exists (select 1 from recharge_attempts a
                        where a.company_id = w.company_id and a.status in ('pending', 'processing'))
     order by w.company_id
     limit $1
"""


async def sweep_candidates(pool: asyncpg.Pool, limit: int = 10_000) -> list[str]:
    """Companies that may need a charge now. Only a filter: plan_recharge decides under the lock."""
    return [row["company_id"] for row in await pool.fetch(_CANDIDATES_SQL, limit)]


# ---- claiming work -------------------------------------------------------------------------------

_CLAIM_SQL = """
    with due as (
        select attempt_id from recharge_attempts
         where status in ('pending', 'processing') and next_attempt_at <= now()
           and (lease_expires_at is null or lease_expires_at <= now())
         order by next_attempt_at
         limit $3
           for update skip locked
    )
    update recharge_attempts a
       set lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), updated_at = now()
      from due
     where a.attempt_id = due.attempt_id
    returning a.*, now() as now
"""


async def claim_due(pool: asyncpg.Pool, owner: str, lease_s: float, limit: int) -> list[Attempt]:
    """Lease up to ``limit`` due attempts to this process.

    SKIP LOCKED lets several processes claim at once without waiting on each other; the lease keeps an
    attempt away from other processes after this short transaction commits, while the provider is
    called. A process that dies leaves a lease that simply expires, and another process takes over.
    """
    rows = await pool.fetch(_CLAIM_SQL, owner, lease_s, limit)
    return [Attempt.from_row(row) for row in rows]


async def next_due_in_s(pool: asyncpg.Pool) -> float | None:
    """Seconds until the next attempt becomes claimable (0 if one already is), or None."""
    value = await pool.fetchval(
        """
        select extract(epoch from min(greatest(next_attempt_at, coalesce(lease_expires_at, next_attempt_at)))
                                  - now())
          from recharge_attempts where status in ('pending', 'processing')
        """
    )
    return None if value is None else max(0.0, float(value))


async def note_call(pool: asyncpg.Pool, attempt_id: uuid.UUID) -> None:
    """Count a provider call before it is made (so backoff grows even if the process dies in it)."""
    await pool.execute(
        "update recharge_attempts set call_count = call_count + 1, updated_at = now() where attempt_id = $1",
        attempt_id,
    )


# ---- outcomes ------------------------------------------------------------------------------------


def outcome_of(result: ChargeResult) -> Outcome:
    return {
        ChargeStatus.SUCCEEDED: Outcome.SUCCEEDED,
        ChargeStatus.PROCESSING: Outcome.PROCESSING,
        ChargeStatus.REQUIRES_ACTION: Outcome.REQUIRES_ACTION,
        ChargeStatus.HARD_DECLINE: Outcome.HARD_DECLINE,
        ChargeStatus.SOFT_DECLINE: Outcome.SOFT_DECLINE,
    }[result.status]


@dataclass(frozen=True, slots=True)
class Backoff:
    retry_backoff_s: tuple[float, ...]
    unknown_retry_backoff_s: tuple[float, ...] = engine.DEFAULT_UNKNOWN_RETRY_BACKOFF_S


async def record_outcome(
    pool: asyncpg.Pool,
    attempt_id: uuid.UUID,
    outcome: Outcome,
    result: ChargeResult | None,
    backoff: Backoff,
    *,
    error: str | None = None,
) -> Recorded:
    """Apply one provider answer to an attempt, in one transaction. Safe to call more than once and
    from any path: the attempt row lock serializes writers, and a status only ever moves forward."""
    async with pool.acquire() as conn, conn.transaction():
        return await apply_outcome(conn, attempt_id, outcome, result, backoff, error=error)


async def apply_outcome(
    conn: Conn,
    attempt_id: uuid.UUID,
    outcome: Outcome,
    result: ChargeResult | None,
    backoff: Backoff,
    *,
    error: str | None = None,
) -> Recorded:
    """``record_outcome`` inside the caller's transaction (the webhook handler's)."""
    row = await conn.fetchrow(
        "select *, now() as now from recharge_attempts where attempt_id = $1 for update", attempt_id
    )
    if row is None:
        raise LookupError(f"no recharge attempt {attempt_id}")
    attempt = Attempt.from_row(row)
    now = attempt.now
    transition = engine.after_outcome(
        outcome,
        retry_number=attempt.retry_number,
        call_count=max(attempt.call_count, 1),
        now=now,
        retry_backoff_s=backoff.retry_backoff_s,
        unknown_retry_backoff_s=backoff.unknown_retry_backoff_s,
    )
    new_status = transition.status
    if attempt.status is Status.PROCESSING and new_status is Status.PENDING:
        # We only failed to poll a PaymentIntent that exists: it stays processing, polled later.
        new_status = Status.PROCESSING
    if not engine.is_forward(attempt.status, new_status):
        return Recorded(attempt.company_id, attempt.status, changed=False)
    # A repeated "still processing" (or a failed poll) is not news for the company.
    event_type = (
        transition.event_type if new_status is not attempt.status or new_status is Status.PENDING else None
    )

    payment_intent_id = attempt.payment_intent_id
    if result is not None and result.payment_intent_id is not None:
        if payment_intent_id is not None and payment_intent_id != result.payment_intent_id:
            # One key, one PaymentIntent: this would be a provider bug. Refuse rather than guess.
            raise RuntimeError(
                f"attempt {attempt_id} has PaymentIntent {payment_intent_id}, provider answered "
                f"{result.payment_intent_id}"
            )
        payment_intent_id = result.payment_intent_id

    final = new_status.is_final
    await conn.execute(
        """
        update recharge_attempts
           set status = $2, next_attempt_at = $3, payment_intent_id = $4,
               decline_code = coalesce($5, decline_code), decline_message = coalesce($6, decline_message),
               last_error = coalesce($7, last_error),
               lease_owner = null, lease_expires_at = null,
               settled_at = case when $8 then now() else null end, updated_at = now()
         where attempt_id = $1
        """,
        attempt_id,
        new_status.value,
        transition.next_attempt_at,
        payment_intent_id,
        result.decline_code if result is not None else None,
        result.message if result is not None else None,
        error,
        final,
    )

    credited = False
    if new_status is Status.SUCCEEDED:
        assert payment_intent_id is not None, "a succeeded charge always has a PaymentIntent"
        charged_cents = result.amount_cents if result is not None else None
        await _credit(conn, attempt, payment_intent_id, charged_cents)
        credited = True
    elif event_type is not None:
        payload: dict[str, Any] = {
            "attempt_id": str(attempt.attempt_id),
            "kind": attempt.kind.value,
            "amount_nanos": attempt.amount_nanos,
            "outcome": outcome.value,
            "status": new_status.value,
            "payment_intent_id": payment_intent_id,
        }
        if result is not None and result.decline_code:
            payload["decline_code"] = result.decline_code
        if result is not None and result.message:
            payload["message"] = result.message
        if new_status is Status.SOFT_DECLINED:
            payload["next_retry_at"] = transition.next_attempt_at
            payload["retry_number"] = attempt.retry_number
        elif not final:
            # Same attempt, same key, later.
            payload["next_retry_at"] = transition.next_attempt_at
            payload["same_attempt"] = True
        else:
            payload["next_retry_at"] = None
        if outcome is Outcome.UNKNOWN and error:
            payload["error"] = error
        await _emit(conn, attempt.company_id, event_type, payload)
    if transition.pause is not None:
        await conn.execute(
            """
            update billing_settings
               set auto_recharge_paused_reason = $2, auto_recharge_paused_at = now(), updated_at = now()
             where company_id = $1
            """,
            attempt.company_id,
            transition.pause.value,
        )
        await _emit(
            conn,
            attempt.company_id,
            "recharge_paused",
            {
                "reason": transition.pause.value,
                "attempt_id": str(attempt.attempt_id),
                "kind": attempt.kind.value,
            },
        )
    log.info(
        "recharge attempt updated",
        company_id=attempt.company_id,
        attempt_id=str(attempt_id),
        outcome=outcome.value,
        status=new_status.value,
        payment_intent_id=payment_intent_id,
        pause=transition.pause.value if transition.pause else None,
    )
    return Recorded(attempt.company_id, new_status, changed=True, credited=credited)


async def _credit(conn: Conn, attempt: Attempt, payment_intent_id: str, charged_cents: int | None) -> None:
    """Credit the wallet for a succeeded PaymentIntent (append_ledger_entry(), then the event), in the
    caller's transaction.

    The unique indexes on the ledger (one credit per PaymentIntent, one per attempt) make a second
    credit impossible even if this were reached twice; the attempt row lock makes that not happen.
    """
    amount_nanos = attempt.amount_nanos
    if charged_cents is not None and charged_cents * 10_000_000 != amount_nanos:
        # The card paid what the provider says it paid; credit that, and make it loud.
        log.error(
            "charged amount differs from the attempt",
            attempt_id=str(attempt.attempt_id),
            attempt_amount_nanos=amount_nanos,
            charged_cents=charged_cents,
        )
        amount_nanos = charged_cents * 10_000_000
    entry_type = "preload_credit" if attempt.kind is Kind.PRELOAD else "recharge_credit"
    what = "Pre-load" if attempt.kind is Kind.PRELOAD else "Auto-recharge"
    description = f"{what} from {_card_label(attempt.card_brand, attempt.card_last4)}"
    entry = await conn.fetchrow(
        "select sequence, balance_after_nanos from append_ledger_entry($1, $2, $3, $4, $5, $6)",
        attempt.company_id,
        entry_type,
        amount_nanos,
        payment_intent_id,
        description,
        attempt.attempt_id,
    )
    assert entry is not None
    sequence, after = entry["sequence"], entry["balance_after_nanos"]
    await _emit(
        conn,
        attempt.company_id,
        "recharge_succeeded",
        {
            "attempt_id": str(attempt.attempt_id),
            "kind": attempt.kind.value,
            "amount_nanos": amount_nanos,
            "payment_intent_id": payment_intent_id,
            "ledger_sequence": sequence,
            "balance_nanos": after,
            "card": _card_label(attempt.card_brand, attempt.card_last4),
        },
    )


async def release_lease(pool: asyncpg.Pool, attempt_id: uuid.UUID, owner: str) -> None:
    """Give an attempt back early (shutdown) so another process need not wait for the lease."""
    await pool.execute(
        """
        update recharge_attempts set lease_owner = null, lease_expires_at = null, updated_at = now()
         where attempt_id = $1 and lease_owner = $2
        """,
        attempt_id,
        owner,
    )


# ---- webhooks ------------------------------------------------------------------------------------


async def record_webhook_event(
    conn: Conn, event_id: str, event_type: str, payment_intent_id: str | None, outcome: str
) -> bool:
    """Remember an event id; False if it was seen before (then the caller changes nothing)."""
    inserted = await conn.fetchval(
        """
        insert into stripe_webhook_events (event_id, event_type, payment_intent_id, outcome)
        values ($1, $2, $3, $4) on conflict (event_id) do nothing returning true
        """,
        event_id,
        event_type,
        payment_intent_id,
        outcome,
    )
    return bool(inserted)


async def find_attempt_id(
    conn: Conn, metadata_attempt_id: str | None, payment_intent_id: str | None
) -> uuid.UUID | None:
    if metadata_attempt_id:
        try:
            candidate = uuid.UUID(metadata_attempt_id)
        except ValueError:
            candidate = None
        if candidate is not None:
            found = await conn.fetchval(
                "select attempt_id from recharge_attempts where attempt_id = $1", candidate
            )
            if found is not None:
                return found  # type: ignore[no-any-return]
    if payment_intent_id:
        found = await conn.fetchval(
            "select attempt_id from recharge_attempts where payment_intent_id = $1", payment_intent_id
        )
        return found  # type: ignore[no-any-return]
    return None
