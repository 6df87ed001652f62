"""Planning: whether a company needs a charge now, decided under its wallet row lock.

``plan_recharge`` takes the wallet row lock and then only inserts an attempt: it never locks an
attempt row while holding the wallet row, which keeps the lock order of ``outcomes`` (attempt row,
then wallet row) free of cycles. It never calls the payment provider; the loop does, after the
attempt has committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
import structlog

from service.config import RechargeCeilings

from . import engine
from .engine import Kind
from .transitions import Status
from .wallet_events import Conn, card_label, emit

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Planned:
    decision: engine.Decision
    attempt_id: uuid.UUID | None


_SNAPSHOT_SQL = """
    select w.balance_nanos, w.minimum_balance_nanos, now() as now, held_nanos(w.company_id) as held_nanos,
           coalesce(s.auto_recharge_enabled, false) as auto_recharge_enabled,
           s.recharge_amount_nanos, coalesce(s.preload_amount_nanos, 0) as preload_amount_nanos,
           s.monthly_recharge_cap_nanos, s.auto_recharge_paused_reason, s.first_card_set_at,
           s.recharge_blocked_by_cap_at, s.recharge_limited_at,
           case when s.recharge_mode = 'top_up_to_target' then s.target_balance_nanos end
               as top_up_target_nanos,
           c.payment_method_id, c.brand, c.last4, pc.provider_customer_id
      from wallets w
      left join billing_settings s using (company_id)
      left join payment_cards c on c.company_id = w.company_id and c.role = 'primary'
      left join payment_customers pc on pc.company_id = w.company_id
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
            and status in ('pending', 'processing', 'succeeded')) as charged_this_month_nanos,
        (select coalesce(sum(amount_nanos), 0) from recharge_attempts
          where company_id = $1 and created_at > $3::timestamptz - interval '24 hours'
            and status in ('pending', 'processing', 'succeeded')) as charged_last_24h_nanos,
        -- Every attempt asked the card for money, except one found never to have been sent.
        (select count(*) from recharge_attempts
          where company_id = $1 and created_at > $3::timestamptz - interval '1 hour' and status <> 'expired')
            as charges_last_hour
"""

_LAST_FINAL_SQL = """
    select distinct on (kind) kind, status, retry_number, next_attempt_at, payment_method_id
      from recharge_attempts
     where company_id = $1 and status not in ('pending', 'processing')
     order by kind, created_at desc
"""


async def plan_recharge(
    conn: Conn, company_id: str, ceilings: RechargeCeilings = engine.DEFAULT_CEILINGS
) -> Planned:
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
        counts = await conn.fetchrow(_ATTEMPTS_SQL, company_id, engine.month_start(now), now)
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
            charged_last_24h_nanos=int(counts["charged_last_24h_nanos"]),
            charges_last_hour=int(counts["charges_last_hour"]),
            limit_notified=wallet["recharge_limited_at"] is not None,
            held_nanos=wallet["held_nanos"],
            top_up_target_nanos=wallet["top_up_target_nanos"],
        )
        decision = engine.decide(snapshot, now, ceilings)
        await _note_ceilings(conn, company_id, snapshot, decision, ceilings)

        block = decision.cap_block
        if block is not None and block.notify:
            await conn.execute(
                "update billing_settings set recharge_blocked_by_cap_at = now() where company_id = $1",
                company_id,
            )
            await emit(
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
        await emit(
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
                "held_nanos": snapshot.held_nanos,
                "minimum_balance_nanos": snapshot.minimum_balance_nanos,
                "card": card_label(wallet["brand"], wallet["last4"]),
                "card_role": "primary",
                "card_brand": wallet["brand"],
                "card_last4": wallet["last4"],
                "payment_method_id": wallet["payment_method_id"],
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


async def _note_ceilings(
    conn: Conn,
    company_id: str,
    snapshot: engine.WalletSnapshot,
    decision: engine.Decision,
    ceilings: RechargeCeilings,
) -> None:
    """Write and tell what the deployment's ceilings did to this decision, in its transaction."""
    if decision.pause is not None:
        await conn.execute(
            """
            update billing_settings
               set auto_recharge_paused_reason = $2, auto_recharge_paused_at = now(), updated_at = now()
             where company_id = $1
            """,
            company_id,
            decision.pause.value,
        )
        await emit(
            conn,
            company_id,
            "recharge_paused",
            {
                "reason": decision.pause.value,
                "charges_last_hour": snapshot.charges_last_hour,
                "max_charges_per_hour": ceilings.max_charges_per_hour,
            },
        )
        log.warning(
            "auto-recharge paused: too many charges in an hour",
            company_id=company_id,
            charges_last_hour=snapshot.charges_last_hour,
            max_charges_per_hour=ceilings.max_charges_per_hour,
        )
    block = decision.limit_block
    if block is not None and block.notify:
        await conn.execute(
            "update billing_settings set recharge_limited_at = now() where company_id = $1", company_id
        )
        await emit(
            conn,
            company_id,
            "recharge_limited",
            {
                "limit": block.limit.value,
                "wanted_nanos": block.wanted_nanos,
                "allowed_nanos": block.allowed_nanos,
                "limit_nanos": block.limit_nanos,
                "charged_last_24h_nanos": block.charged_last_24h_nanos,
                "balance_nanos": snapshot.balance_nanos,
                "minimum_balance_nanos": snapshot.minimum_balance_nanos,
            },
        )
    if block is not None:
        log.info(
            "recharge limited by a deployment ceiling",
            company_id=company_id,
            limit=block.limit.value,
            wanted_nanos=block.wanted_nanos,
            allowed_nanos=block.allowed_nanos,
        )
    if decision.clear_limit_block:
        await conn.execute(
            "update billing_settings set recharge_limited_at = null where company_id = $1", company_id
        )


_CANDIDATES_SQL = """
    select w.company_id
      from wallets w
      join billing_settings s using (company_id)
      join payment_cards c on c.company_id = w.company_id and c.role = 'primary'
      join payment_customers pc on pc.company_id = w.company_id
     where s.auto_recharge_paused_reason is null
       and ((s.auto_recharge_enabled
             and w.balance_nanos - held_nanos(w.company_id) < w.minimum_balance_nanos)
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
