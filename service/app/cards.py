"""The card on file, through the payment provider: set as default, read, remove.

Provider calls happen outside any database transaction (they can take seconds); the database change
that follows is one transaction that also records the audit rows, the wallet event and the stored
response. A card number never reaches this service. Setting a card up is ``card_setup.py``; the
provider customer and the keys of provider calls are ``payment_customers.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from service.app import idempotency
from service.app.billing_settings import (
    RECHARGE_WANTED_CHANNEL,
    Applied,
    Card,
    card_of,
    get_settings,
    lock_settings,
    replay_of,
)
from service.app.payment_customers import ensure_customer, provider_failure, provider_key, request_of
from service.app.settings_audit import audit_view, record_changes
from service.domain.errors import (
    Aborted,
    CardNotFound,
    CardRejected,
    CompanyNotFound,
    FieldViolation,
    InvalidArgument,
)
from service.domain.settings import BACKUP_CARD, PAUSED_CARD_REMOVED, PRIMARY_CARD
from service.payments.provider import (
    CardDetails,
    IdempotencyConflict,
    OutcomeUnknown,
    PaymentMethodRejected,
    PaymentProvider,
    PaymentProviderError,
)

log = structlog.get_logger(__name__)

SET_DEFAULT_CARD = "set_default_card"
REMOVE_CARD = "remove_card"
# Provider answers that mean "this payment method is not attached (any more)": removing it again is done.
_ALREADY_DETACHED_CODES = frozenset({"resource_missing", "payment_method_unexpected_state"})


@dataclass(frozen=True)
class CardSet:
    card: Card
    first_card: bool


def _card_payload(card: CardDetails | Card, role: str) -> dict[str, object]:
    return {
        "payment_method_id": card.payment_method_id,
        "brand": card.brand,
        "last4": card.last4,
        "card_role": role,
    }


def _role_parts(role: str) -> tuple[str, ...]:
    """The role as a fingerprint or key part; none for the primary, so its keys stay what they were."""
    return () if role == PRIMARY_CARD else (role,)


async def set_default_card(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    company_id: str,
    payment_method_id: str,
    request_id: str,
    actor: str,
    principal_id: str | None = None,
    role: str = PRIMARY_CARD,
) -> Applied[CardSet]:
    """Attach the payment method and store its summary as the card of `role`.

    The primary: the company's first card sets first_card_set_at and turns auto-recharge on; any
    primary clears a pause (the company acted) and wakes the recharge engine (NOTIFY recharge_wanted),
    which charges the pre-load or a due recharge; the backup card set as the primary moves there. The
    backup: stored beside the primary, charged only by a fallback; it changes nothing else. A card the
    provider rejects raises CardRejected and stores nothing.
    """
    parts = _role_parts(role)
    request = request_of(SET_DEFAULT_CARD, company_id, request_id, payment_method_id, *parts)
    seen = await idempotency.find(pool, request)
    if seen is not None:
        return Applied(
            await replay_of(pool, seen, CardSet, _current_card_set(company_id, role)), replayed=True
        )
    customer_id = await ensure_customer(pool, provider, company_id)
    try:
        card = await provider.attach_payment_method(
            customer_id,
            payment_method_id,
            provider_key(SET_DEFAULT_CARD, company_id, request_id, payment_method_id, *parts),
            make_default=role == PRIMARY_CARD,
        )
    except PaymentMethodRejected as rejected:
        raise CardRejected(
            f"the card was not saved: {rejected.reason}",
            metadata={
                "payment_method_id": payment_method_id,
                "provider_code": rejected.code or "",
                "decline_code": rejected.decline_code or "",
            },
        ) from None
    except PaymentProviderError as error:
        raise provider_failure(error, "saving the card") from None

    async with pool.acquire() as conn, conn.transaction():
        seen = await idempotency.claim(conn, request)
        if seen is not None:
            return Applied(
                await replay_of(conn, seen, CardSet, _current_card_set(company_id, role)), replayed=True
            )
        before = await lock_settings(conn, company_id)
        if role == BACKUP_CARD and before.card is not None:
            if before.card.payment_method_id == card.payment_method_id:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "payment_method_id", "is the primary card; a backup must be another card"
                        )
                    ]
                )
        first_card = role == PRIMARY_CARD and before.first_card_set_at is None
        # A payment method has one role: the backup set as the primary moves there.
        await conn.execute(
            "delete from payment_cards where company_id = $1 and payment_method_id = $2 and role <> $3",
            company_id,
            card.payment_method_id,
            role,
        )
        await conn.execute(
            """
            insert into payment_cards (company_id, payment_method_id, brand, last4, exp_month, exp_year,
                                       fingerprint, role)
            values ($1, $2, $3, $4, $5, $6, $7, $8)
            on conflict (company_id, role) do update
               set payment_method_id = excluded.payment_method_id, brand = excluded.brand,
                   last4 = excluded.last4, exp_month = excluded.exp_month, exp_year = excluded.exp_year,
                   fingerprint = excluded.fingerprint, updated_at = now()
            """,
            company_id,
            card.payment_method_id,
            card.brand,
            card.last4,
            card.exp_month,
            card.exp_year,
            card.fingerprint,
            role,
        )
        # The SetupIntent handed out so far has done its job: the next setup makes a new one.
        await conn.execute(
            """
            update payment_customers set open_setup_intent_id = null, setup_generation = setup_generation + 1
             where company_id = $1
            """,
            company_id,
        )
        if role == PRIMARY_CARD:
            await conn.execute(
                """
                update billing_settings
                   set first_card_set_at = coalesce(first_card_set_at, now()),
                       auto_recharge_enabled = auto_recharge_enabled or $2,
                       auto_recharge_paused_reason = null,
                       updated_at = now()
                 where company_id = $1
                """,
                company_id,
                first_card,
            )
        after = await get_settings(conn, company_id)
        await record_changes(
            conn, company_id, actor, request_id, audit_view(before), audit_view(after), principal_id
        )
        payload = {**_card_payload(card, role), "first_card": first_card}
        await conn.execute(
            "select emit_wallet_event(p_company_id => $1, p_event_type => 'card_set',"
            " p_payload => $2::jsonb)",
            company_id,
            json.dumps(payload),
        )
        await conn.execute("select pg_notify($1, $2)", RECHARGE_WANTED_CHANNEL, company_id)
        stored = after.card if role == PRIMARY_CARD else after.backup_card
        assert stored is not None
        result = CardSet(stored, first_card)
        await idempotency.save_result(conn, request, result)
    log.info("card set", company_id=company_id, first_card=first_card, brand=card.brand, card_role=role)
    return Applied(result, replayed=False)


def _current_card_set(company_id: str, role: str) -> Any:
    async def current(conn: Any) -> CardSet:
        return CardSet(await get_card(conn, company_id, role), first_card=False)

    return current


async def get_cards(pool: Any, company_id: str) -> tuple[Card | None, Card | None]:
    """The company's (primary, backup) cards; NOT_FOUND when it has neither."""
    row = await pool.fetchrow(
        """
        select b.company_id, c.payment_method_id, c.brand, c.last4, c.exp_month, c.exp_year, c.fingerprint,
               c.updated_at as card_updated_at,
               k.payment_method_id as backup_payment_method_id, k.brand as backup_brand,
               k.last4 as backup_last4, k.exp_month as backup_exp_month, k.exp_year as backup_exp_year,
               k.fingerprint as backup_fingerprint, k.updated_at as backup_card_updated_at
          from billing_settings b
          left join payment_cards c on c.company_id = b.company_id and c.role = 'primary'
          left join payment_cards k on k.company_id = b.company_id and k.role = 'backup'
         where b.company_id = $1
        """,
        company_id,
    )
    if row is None:
        raise CompanyNotFound(company_id)
    primary, backup = card_of(row, PRIMARY_CARD), card_of(row, BACKUP_CARD)
    if primary is None and backup is None:
        raise CardNotFound(company_id)
    return primary, backup


async def get_card(pool: Any, company_id: str, role: str = PRIMARY_CARD) -> Card:
    """The company's card of `role`, or NOT_FOUND."""
    primary, backup = await get_cards(pool, company_id)
    card = primary if role == PRIMARY_CARD else backup
    if card is None:
        raise CardNotFound(company_id)
    return card


async def remove_card(
    pool: asyncpg.Pool,
    provider: PaymentProvider,
    company_id: str,
    request_id: str,
    actor: str,
    principal_id: str | None = None,
    role: str = PRIMARY_CARD,
) -> Applied[Card]:
    """Detach the card of `role` at the provider and forget it; removing the primary also pauses
    auto-recharge (reason card_removed). The result is the removed card."""
    request = request_of(REMOVE_CARD, company_id, request_id, *_role_parts(role))
    seen = await idempotency.find(pool, request)
    if seen is not None:
        return Applied(
            await replay_of(pool, seen, Card, lambda c: get_card(c, company_id, role)), replayed=True
        )
    card = await get_card(pool, company_id, role)
    payment_method_id = card.payment_method_id
    try:
        await provider.detach_payment_method(
            payment_method_id, provider_key(REMOVE_CARD, company_id, request_id, payment_method_id)
        )
    except (OutcomeUnknown, IdempotencyConflict) as error:
        raise provider_failure(error, "removing the card") from None
    except PaymentProviderError as error:
        # Already detached (e.g. from Stripe's dashboard, or by an earlier attempt whose answer was
        # lost): the provider no longer holds it for us, which is what removing wants.
        if error.code not in _ALREADY_DETACHED_CODES:
            raise provider_failure(error, "removing the card") from None
        log.info("card already detached at the provider", company_id=company_id, provider_code=error.code)

    async with pool.acquire() as conn, conn.transaction():
        seen = await idempotency.claim(conn, request)
        if seen is not None:
            return Applied(
                await replay_of(conn, seen, Card, lambda c: get_card(c, company_id, role)), replayed=True
            )
        before = await lock_settings(conn, company_id)
        deleted = await conn.fetchval(
            "delete from payment_cards where company_id = $1 and payment_method_id = $2 and role = $3"
            " returning true",
            company_id,
            payment_method_id,
            role,
        )
        if deleted is None:
            raise Aborted(
                "the card on file changed while it was being removed; call RemoveCard again if the new "
                "card should go too",
                metadata={"company_id": company_id},
            )
        if role == PRIMARY_CARD:
            await conn.execute(
                """
                update billing_settings set auto_recharge_paused_reason = $2, updated_at = now()
                 where company_id = $1
                """,
                company_id,
                PAUSED_CARD_REMOVED,
            )
        after = await get_settings(conn, company_id)
        await record_changes(
            conn, company_id, actor, request_id, audit_view(before), audit_view(after), principal_id
        )
        removed = before.card if role == PRIMARY_CARD else before.backup_card
        assert removed is not None
        await conn.execute(
            "select emit_wallet_event(p_company_id => $1, p_event_type => 'card_removed',"
            " p_payload => $2::jsonb)",
            company_id,
            json.dumps(_card_payload(removed, role)),
        )
        await idempotency.save_result(conn, request, removed)
    log.info("card removed", company_id=company_id, card_role=role)
    return Applied(removed, replayed=False)
