"""Wallets, their ledger entries, holds, authorizations and events on the wire."""

from __future__ import annotations

from consofta.billing.v1 import wallet_events_pb2, wallet_service_pb2

from service.api.wire.enums import EnumTable
from service.api.wire.money import money
from service.api.wire.timestamps import timestamp
from service.app.events import WalletEvent
from service.app.holds import Authorization, Denial, Extension, Hold, HoldState
from service.app.wallets import Wallet, WalletStatus
from service.domain.ledger import ADJUSTMENT, ENTRY_TYPES, MANUAL_CREDIT, LedgerEntry

STATUSES: EnumTable[WalletStatus] = EnumTable(wallet_service_pb2.WalletStatus.DESCRIPTOR, list(WalletStatus))
TRANSACTION_TYPES: EnumTable[str] = EnumTable(wallet_service_pb2.TransactionType.DESCRIPTOR, ENTRY_TYPES)
# GOODWILL is a manual credit, CORRECTION an adjustment; an unset kind is a goodwill credit.
CREDIT_KINDS: EnumTable[str] = EnumTable(
    wallet_service_pb2.CreditKind.DESCRIPTOR,
    [],
    also={
        "CREDIT_KIND_GOODWILL": MANUAL_CREDIT,
        "CREDIT_KIND_CORRECTION": ADJUSTMENT,
        "CREDIT_KIND_UNSPECIFIED": MANUAL_CREDIT,
    },
)
HOLD_STATES: EnumTable[HoldState] = EnumTable(wallet_service_pb2.HoldState.DESCRIPTOR, list(HoldState))
DENIALS: EnumTable[Denial] = EnumTable(wallet_service_pb2.AuthorizationDenial.DESCRIPTOR, list(Denial))


def wallet_message(wallet: Wallet) -> wallet_service_pb2.Wallet:
    message = wallet_service_pb2.Wallet(
        company_id=wallet.company_id,
        display_name=wallet.display_name,
        balance=money(wallet.balance_nanos),
        minimum_balance=money(wallet.minimum_balance_nanos),
        last_ledger_sequence=wallet.last_sequence,
        created_at=timestamp(wallet.created_at),
        updated_at=timestamp(wallet.updated_at),
        available_balance=money(wallet.balance_nanos - wallet.held_nanos),
        held=money(wallet.held_nanos),
        status=STATUSES.wire(wallet.status),  # type: ignore[arg-type]
        authorization_floor=money(-wallet.credit_limit_nanos),
        credit_limit=money(wallet.credit_limit_nanos),
    )
    if wallet.last_recharge_at is not None:
        message.last_recharge_at.CopyFrom(timestamp(wallet.last_recharge_at))
    return message


def transaction_message(entry: LedgerEntry) -> wallet_service_pb2.WalletTransaction:
    return wallet_service_pb2.WalletTransaction(
        sequence=entry.sequence,
        type=TRANSACTION_TYPES.wire(entry.entry_type) if entry.entry_type in ENTRY_TYPES else 0,  # type: ignore[arg-type]
        amount=money(entry.amount_nanos),
        balance_before=money(entry.balance_before_nanos),
        balance_after=money(entry.balance_after_nanos),
        created_at=timestamp(entry.created_at),
        usage_record_id="" if entry.usage_record_id is None else str(entry.usage_record_id),
        reference=entry.reference or "",
        description=entry.description,
    )


def hold_message(hold: Hold) -> wallet_service_pb2.Hold:
    return wallet_service_pb2.Hold(
        id=str(hold.hold_id),
        company_id=hold.company_id,
        request_id=hold.request_id,
        amount=money(hold.amount_nanos),
        state=HOLD_STATES.wire(hold.state),  # type: ignore[arg-type]
        created_at=timestamp(hold.created_at),
        expires_at=timestamp(hold.expires_at),
        usage_record_id="" if hold.usage_record_id is None else str(hold.usage_record_id),
        authorized_quantity=hold.authorized_quantity,
    )


def authorization_response(result: Authorization) -> wallet_service_pb2.AuthorizeUsageResponse:
    reply = wallet_service_pb2.AuthorizeUsageResponse(
        allowed=result.allowed,
        amount=money(result.amount_nanos),
        available_balance=money(result.available_nanos),
        replayed=result.replayed,
        affordable_quantity=result.affordable_quantity,
    )
    if result.hold is not None:
        reply.hold.CopyFrom(hold_message(result.hold))
    if result.denial is not None:
        reply.denial = DENIALS.wire(result.denial)  # type: ignore[assignment]
        reply.denial_message = result.denial_message
    return reply


def extension_response(result: Extension) -> wallet_service_pb2.ExtendHoldResponse:
    reply = wallet_service_pb2.ExtendHoldResponse(
        extended=result.extended,
        hold=hold_message(result.hold),
        added_amount=money(result.added_amount_nanos),
        affordable_quantity=result.affordable_quantity,
        available_balance=money(result.available_nanos),
        replayed=result.replayed,
    )
    if result.denial is not None:
        reply.denial = DENIALS.wire(result.denial)  # type: ignore[assignment]
        reply.denial_message = result.denial_message
    return reply


def event_message(event: WalletEvent) -> wallet_events_pb2.WalletEvent:
    return wallet_events_pb2.WalletEvent(
        event_id=event.event_id,
        company_id=event.company_id,
        sequence=event.sequence,
        type=event.event_type,
        payload_json=event.payload_json,
        created_at=timestamp(event.created_at),
        cursor=event.cursor,
    )
