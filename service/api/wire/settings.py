"""Billing settings, the card on file and the audit trail on the wire."""

from __future__ import annotations

from consofta.billing.v1 import settings_service_pb2 as pb

from service.api.wire.enums import EnumTable
from service.api.wire.money import money
from service.api.wire.timestamps import timestamp
from service.app.billing_settings import BillingSettings, Card
from service.app.settings_audit import SettingsChange
from service.domain.settings import CARD_ROLES, PAUSED_REASONS, RECHARGE_MODES

PAUSED_REASON_TABLE: EnumTable[str] = EnumTable(pb.AutoRechargePausedReason.DESCRIPTOR, PAUSED_REASONS)
RECHARGE_MODE_TABLE: EnumTable[str] = EnumTable(pb.RechargeMode.DESCRIPTOR, RECHARGE_MODES)
CARD_ROLE_TABLE: EnumTable[str] = EnumTable(pb.CardRole.DESCRIPTOR, CARD_ROLES)


def paused_reason(reason: str | None) -> int:
    if reason is None:
        return pb.AUTO_RECHARGE_PAUSED_REASON_UNSPECIFIED
    if reason in PAUSED_REASONS:
        return PAUSED_REASON_TABLE.wire(reason)
    return pb.AUTO_RECHARGE_PAUSED_REASON_OTHER


def card_message(card: Card) -> pb.Card:
    return pb.Card(
        payment_method_id=card.payment_method_id,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        fingerprint=card.fingerprint or "",
        updated_at=timestamp(card.updated_at),
        role=CARD_ROLE_TABLE.wire(card.role),  # type: ignore[arg-type]
    )


def settings_message(settings: BillingSettings) -> pb.BillingSettings:
    reason = settings.auto_recharge_paused_reason
    message = pb.BillingSettings(
        company_id=settings.company_id,
        minimum_balance=money(settings.minimum_balance_nanos),
        recharge_amount=money(settings.recharge_amount_nanos),
        auto_recharge_enabled=settings.auto_recharge_enabled,
        preload_amount=money(settings.preload_amount_nanos),
        auto_recharge_paused_reason=paused_reason(reason),  # type: ignore[arg-type]
        auto_recharge_paused_detail=reason or "",
        updated_at=timestamp(settings.updated_at),
    )
    if settings.monthly_recharge_cap_nanos is not None:
        message.monthly_recharge_cap.CopyFrom(money(settings.monthly_recharge_cap_nanos))
    if settings.card is not None:
        message.card.CopyFrom(card_message(settings.card))
    if settings.first_card_set_at is not None:
        message.first_card_set_at.CopyFrom(timestamp(settings.first_card_set_at))
    message.recharge_mode = RECHARGE_MODE_TABLE.wire(settings.recharge_mode)  # type: ignore[assignment]
    if settings.target_balance_nanos is not None:
        message.target_balance.CopyFrom(money(settings.target_balance_nanos))
    message.balance_alert_thresholds.extend(money(t) for t in settings.balance_alert_thresholds_nanos)
    return message


def change_message(change: SettingsChange) -> pb.SettingsChange:
    message = pb.SettingsChange(
        change_id=change.change_id,
        field=change.field,
        actor=change.actor,
        principal_id=change.principal_id or "",
        request_id=change.request_id or "",
        changed_at=timestamp(change.changed_at),
    )
    if change.old_value is not None:
        message.old_value = change.old_value
    if change.new_value is not None:
        message.new_value = change.new_value
    return message
