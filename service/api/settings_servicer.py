"""SettingsService: billing settings, their audit trail, and the card on file. A thin edge: parse and
validate the request, call the use case, build the response."""

from __future__ import annotations

from typing import Any

import asyncpg
from consofta.billing.v1 import settings_service_pb2 as pb
from consofta.billing.v1 import settings_service_pb2_grpc
from google.type.money_pb2 import Money
from grpc.aio import ServicerContext

from service.api.auth import audit_principal_id, current_principal
from service.api.validation import Violations, check_company_id, check_request_key
from service.api.wire.money import MoneyError, nanos_of
from service.api.wire.settings import (
    CARD_ROLE_TABLE,
    RECHARGE_MODE_TABLE,
    card_message,
    change_message,
    settings_message,
)
from service.app import card_setup, cards
from service.app.billing_settings import get_settings
from service.app.settings import DEFAULT_APPROVAL_LEVELS, update_settings
from service.app.settings_audit import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, list_changes, parse_page_token
from service.domain.settings import (
    AUTO_RECHARGE_ENABLED,
    BALANCE_ALERT_THRESHOLDS,
    FIXED_AMOUNT,
    MONEY_FIELDS,
    MONTHLY_RECHARGE_CAP,
    PRIMARY_CARD,
    RECHARGE_MODE,
    TARGET_BALANCE,
    WRITABLE_FIELDS,
    SettingValue,
)
from service.domain.settings_approval import ApprovalLevels
from service.domain.settings_checks import RechargeBounds
from service.domain.text import excerpt
from service.payments.provider import PaymentProvider

# Who a change is on behalf of, as the audit trail records it next to the authenticated principal: set
# by the dashboard's backend to the signed-in user, e.g. "user:42" or "jane@example.com". The label is
# the caller's word, never its identity: the principal comes from its credentials.
ON_BEHALF_OF_METADATA_KEY = "x-on-behalf-of"
ACTOR_METADATA_KEY = "x-actor"
MAX_ACTOR_CHARS = 200
MAX_PAYMENT_METHOD_ID_CHARS = 255

_READ_ONLY_FIELDS = frozenset(
    {"company_id", "auto_recharge_paused_reason", "auto_recharge_paused_detail", "card", "first_card_set_at",
     "updated_at"}
)  # fmt: skip


def actor_of(v: Violations, context: ServicerContext[Any, Any]) -> str:
    """Who the call is on behalf of: `x-on-behalf-of` metadata, else `x-actor`, else the principal."""
    given = {
        key: value
        for key, value in context.invocation_metadata() or ()
        if key in (ON_BEHALF_OF_METADATA_KEY, ACTOR_METADATA_KEY) and isinstance(value, str) and value.strip()
    }
    key = ON_BEHALF_OF_METADATA_KEY if ON_BEHALF_OF_METADATA_KEY in given else ACTOR_METADATA_KEY
    if key not in given:
        return audit_principal_id()
    actor = given[key].strip()
    if len(actor) > MAX_ACTOR_CHARS:
        v.add(key, f"(metadata) is {len(actor)} characters long; the limit is {MAX_ACTOR_CHARS}")
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in actor):
        v.add(key, "(metadata) must not contain control characters")
    return actor


def _parse_amount(v: Violations, field: str, value: Money) -> int | None:
    try:
        return nanos_of(value)
    except MoneyError as error:
        v.add(field, str(error))
        return None


def _mask_fields(v: Violations, request: pb.UpdateBillingSettingsRequest) -> list[str]:
    paths = list(request.update_mask.paths)
    if not paths:
        v.add(
            "update_mask",
            'is required: name the fields to change, e.g. paths: ["recharge_amount"] ("*" changes all of '
            f"{', '.join(WRITABLE_FIELDS)})",
        )
        return []
    fields: list[str] = []
    for path in paths:
        if path == "*":
            fields.extend(WRITABLE_FIELDS)
        elif path in WRITABLE_FIELDS:
            fields.append(path)
        elif path in _READ_ONLY_FIELDS:
            v.add("update_mask", f"names {excerpt(path)}, which is read-only")
        else:
            v.add(
                "update_mask",
                f"names {excerpt(path)}, which is not a field that can be changed; use any of "
                f"{', '.join(WRITABLE_FIELDS)}",
            )
    return list(dict.fromkeys(fields))


def parse_update(v: Violations, request: pb.UpdateBillingSettingsRequest) -> dict[str, SettingValue]:
    """The requested changes (field name -> new value), adding violations for what is malformed."""
    settings = request.settings
    if settings.company_id and settings.company_id != request.company_id:
        v.add("settings.company_id", "must be empty or equal to company_id")
    changes: dict[str, SettingValue] = {}
    for name in _mask_fields(v, request):
        field = f"settings.{name}"
        if name == AUTO_RECHARGE_ENABLED:
            changes[name] = settings.auto_recharge_enabled
        elif name == RECHARGE_MODE:
            mode = RECHARGE_MODE_TABLE.domain(settings.recharge_mode)
            changes[name] = FIXED_AMOUNT if mode is None else mode
        elif name == BALANCE_ALERT_THRESHOLDS:
            amounts = [
                _parse_amount(v, f"{field}[{index}]", given)
                for index, given in enumerate(settings.balance_alert_thresholds)
            ]
            if all(amount is not None for amount in amounts):
                changes[name] = tuple(amount for amount in amounts if amount is not None)
        elif name in MONEY_FIELDS:
            if not settings.HasField(name):  # type: ignore[arg-type]
                if name in (MONTHLY_RECHARGE_CAP, TARGET_BALANCE):
                    changes[name] = None  # named but unset: clear it
                else:
                    v.add(field, "is named in update_mask but not set; give an amount in USD")
                continue
            amount = _parse_amount(v, field, getattr(settings, name))
            if amount is not None:
                changes[name] = amount
    return changes


class SettingsServicer(settings_service_pb2_grpc.SettingsServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: PaymentProvider,
        bounds: RechargeBounds,
        approval: ApprovalLevels = DEFAULT_APPROVAL_LEVELS,
    ) -> None:
        self._pool = pool
        self._provider = provider
        self._bounds = bounds
        self._approval = approval

    async def GetBillingSettings(
        self, request: pb.GetBillingSettingsRequest, context: ServicerContext[Any, Any]
    ) -> pb.GetBillingSettingsResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        v.raise_if_any()
        settings = await get_settings(self._pool, request.company_id)
        return pb.GetBillingSettingsResponse(settings=settings_message(settings))

    async def UpdateBillingSettings(
        self, request: pb.UpdateBillingSettingsRequest, context: ServicerContext[Any, Any]
    ) -> pb.UpdateBillingSettingsResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        actor = actor_of(v, context)
        changes = parse_update(v, request)
        v.raise_if_any()
        principal = current_principal()
        applied = await update_settings(
            self._pool,
            request.company_id,
            changes,
            request.request_id,
            actor,
            self._bounds,
            principal_id=audit_principal_id(),
            approval=self._approval,
            # The caller's role; None while authentication is off (see may_raise_above_approval_level).
            roles=None if principal is None else frozenset({principal.role.value}),
        )
        return pb.UpdateBillingSettingsResponse(
            settings=settings_message(applied.result), replayed=applied.replayed
        )

    async def ListSettingsChanges(
        self, request: pb.ListSettingsChangesRequest, context: ServicerContext[Any, Any]
    ) -> pb.ListSettingsChangesResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        if request.page_size < 0:
            v.add("page_size", f"must not be negative, got {request.page_size}")
        v.raise_if_any()
        after_change_id = (
            parse_page_token(request.page_token, request.company_id) if request.page_token else None
        )
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page = await list_changes(self._pool, request.company_id, page_size, after_change_id)
        return pb.ListSettingsChangesResponse(
            changes=[change_message(c) for c in page.changes], next_page_token=page.next_page_token
        )

    async def StartCardSetup(
        self, request: pb.StartCardSetupRequest, context: ServicerContext[Any, Any]
    ) -> pb.StartCardSetupResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        v.raise_if_any()
        setup = await card_setup.start_card_setup(
            self._pool, self._provider, request.company_id, request.request_id
        )
        return pb.StartCardSetupResponse(
            setup_intent_id=setup.intent.setup_intent_id,
            client_secret=setup.intent.client_secret,
            customer_id=setup.customer_id,
            replayed=setup.replayed,
        )

    async def SetDefaultCard(
        self, request: pb.SetDefaultCardRequest, context: ServicerContext[Any, Any]
    ) -> pb.SetDefaultCardResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        _check_payment_method_id(v, request.payment_method_id)
        role = _card_role(v, request.role)
        actor = actor_of(v, context)
        v.raise_if_any()
        applied = await cards.set_default_card(
            self._pool,
            self._provider,
            request.company_id,
            request.payment_method_id,
            request.request_id,
            actor,
            principal_id=audit_principal_id(),
            role=role,
        )
        return pb.SetDefaultCardResponse(
            card=card_message(applied.result.card),
            first_card=applied.result.first_card,
            replayed=applied.replayed,
        )

    async def GetCard(
        self, request: pb.GetCardRequest, context: ServicerContext[Any, Any]
    ) -> pb.GetCardResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        v.raise_if_any()
        primary, backup = await cards.get_cards(self._pool, request.company_id)
        response = pb.GetCardResponse()
        if primary is not None:
            response.card.CopyFrom(card_message(primary))
        if backup is not None:
            response.backup_card.CopyFrom(card_message(backup))
        return response

    async def RemoveCard(
        self, request: pb.RemoveCardRequest, context: ServicerContext[Any, Any]
    ) -> pb.RemoveCardResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        role = _card_role(v, request.role)
        actor = actor_of(v, context)
        v.raise_if_any()
        applied = await cards.remove_card(
            self._pool,
            self._provider,
            request.company_id,
            request.request_id,
            actor,
            principal_id=audit_principal_id(),
            role=role,
        )
        return pb.RemoveCardResponse(removed_card=card_message(applied.result), replayed=applied.replayed)


def _card_role(v: Violations, number: int) -> str:
    """The role a request names; UNSPECIFIED is the primary, a number this server does not know is refused."""
    if number == pb.CARD_ROLE_UNSPECIFIED:
        return PRIMARY_CARD
    role = CARD_ROLE_TABLE.domain(number)
    if role is None:
        v.add("role", f"must be {CARD_ROLE_TABLE.choices()}, got {number}")
        return PRIMARY_CARD
    return role


def _check_payment_method_id(v: Violations, value: str) -> None:
    if not value:
        v.add("payment_method_id", "is required: the id Stripe.js returned for the card (pm_...)")
    elif len(value) > MAX_PAYMENT_METHOD_ID_CHARS:
        v.add(
            "payment_method_id",
            f"is {len(value)} characters long; the limit is {MAX_PAYMENT_METHOD_ID_CHARS}",
        )
    elif not all(c.isascii() and (c.isalnum() or c == "_") for c in value):
        v.add("payment_method_id", "must be letters, digits and '_' only, like pm_1Nx...")
