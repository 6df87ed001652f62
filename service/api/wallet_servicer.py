"""WalletService: create and read wallets, their history, manual credits, holds and the event stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from consofta.billing.v1 import wallet_events_pb2, wallet_service_pb2, wallet_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.convert import MoneyError, datetime_of, money, nanos_of, timestamp
from service.api.reporting_servicer import WalletReporting
from service.api.validation import (
    Violations,
    check_company_id,
    check_display_name,
    check_request_key,
    parse_usage,
)
from service.app.credits import CreditKind, credit_violations, credit_wallet
from service.app.events import EventNotifier, watch_events
from service.app.holds import (
    DEFAULT_HOLD_DURATION,
    MAX_HOLD_DURATION,
    MIN_HOLD_DURATION,
    Denial,
    Hold,
    HoldState,
    authorize_usage,
    release_hold,
)
from service.app.transactions import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TransactionQuery,
    list_transactions,
)
from service.app.wallets import WalletStatus, create_wallet, get_wallet, wallet_status

_STATUSES = {
    WalletStatus.ACTIVE: wallet_service_pb2.WALLET_STATUS_ACTIVE,
    WalletStatus.BELOW_MINIMUM: wallet_service_pb2.WALLET_STATUS_BELOW_MINIMUM,
    WalletStatus.SUSPENDED: wallet_service_pb2.WALLET_STATUS_SUSPENDED,
}
_ENTRY_TYPES = {
    "usage_debit": wallet_service_pb2.TRANSACTION_TYPE_USAGE_DEBIT,
    "recharge_credit": wallet_service_pb2.TRANSACTION_TYPE_RECHARGE_CREDIT,
    "preload_credit": wallet_service_pb2.TRANSACTION_TYPE_PRELOAD_CREDIT,
    "manual_credit": wallet_service_pb2.TRANSACTION_TYPE_MANUAL_CREDIT,
    "adjustment": wallet_service_pb2.TRANSACTION_TYPE_ADJUSTMENT,
}
_TYPE_NAMES = {value: name for name, value in _ENTRY_TYPES.items()}
_CREDIT_KINDS: dict[int, CreditKind] = {
    wallet_service_pb2.CREDIT_KIND_UNSPECIFIED: "manual_credit",
    wallet_service_pb2.CREDIT_KIND_GOODWILL: "manual_credit",
    wallet_service_pb2.CREDIT_KIND_CORRECTION: "adjustment",
}
_HOLD_STATES = {
    HoldState.ACTIVE: wallet_service_pb2.HOLD_STATE_ACTIVE,
    HoldState.EXPIRED: wallet_service_pb2.HOLD_STATE_EXPIRED,
    HoldState.RELEASED: wallet_service_pb2.HOLD_STATE_RELEASED,
    HoldState.CAPTURED: wallet_service_pb2.HOLD_STATE_CAPTURED,
}
_DENIALS = {
    Denial.INSUFFICIENT_FUNDS: wallet_service_pb2.AUTHORIZATION_DENIAL_INSUFFICIENT_FUNDS,
    Denial.WALLET_SUSPENDED: wallet_service_pb2.AUTHORIZATION_DENIAL_WALLET_SUSPENDED,
}


def wallet_of_row(row: asyncpg.Record) -> wallet_service_pb2.Wallet:
    wallet = wallet_service_pb2.Wallet(
        company_id=row["company_id"],
        display_name=row["display_name"],
        balance=money(row["balance_nanos"]),
        minimum_balance=money(row["minimum_balance_nanos"]),
        last_ledger_sequence=row["last_sequence"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        available_balance=money(row["balance_nanos"] - row["held_nanos"]),
        held=money(row["held_nanos"]),
        status=_STATUSES[wallet_status(row)],
        authorization_floor=money(-row["credit_limit_nanos"]),
        credit_limit=money(row["credit_limit_nanos"]),
    )
    if row["last_recharge_at"] is not None:
        wallet.last_recharge_at.CopyFrom(timestamp(row["last_recharge_at"]))
    return wallet


def transaction_of_row(row: asyncpg.Record) -> wallet_service_pb2.WalletTransaction:
    usage_record_id = row["usage_record_id"]
    return wallet_service_pb2.WalletTransaction(
        sequence=row["sequence"],
        type=_ENTRY_TYPES.get(row["entry_type"], wallet_service_pb2.TRANSACTION_TYPE_UNSPECIFIED),
        amount=money(row["amount_nanos"]),
        balance_before=money(row["balance_before_nanos"]),
        balance_after=money(row["balance_after_nanos"]),
        created_at=timestamp(row["created_at"]),
        usage_record_id="" if usage_record_id is None else str(usage_record_id),
        reference=row["reference"] or "",
        description=row["description"],
    )


def hold_message(hold: Hold) -> wallet_service_pb2.Hold:
    return wallet_service_pb2.Hold(
        id=str(hold.hold_id),
        company_id=hold.company_id,
        request_id=hold.request_id,
        amount=money(hold.amount_nanos),
        state=_HOLD_STATES[hold.state],
        created_at=timestamp(hold.created_at),
        expires_at=timestamp(hold.expires_at),
        usage_record_id="" if hold.usage_record_id is None else str(hold.usage_record_id),
    )


def parse_uuid(v: Violations, value: str, field: str) -> uuid.UUID | None:
    if not value:
        v.add(field, "is required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        v.add(field, "must be a UUID, as returned by AuthorizeUsage")
        return None


def _optional_time(v: Violations, has: bool, stamp: Any, field: str) -> datetime | None:
    if not has:
        return None
    try:
        return datetime_of(stamp)
    except (ValueError, OverflowError):
        v.add(field, "is not a valid timestamp")
        return None


class WalletServicer(WalletReporting, wallet_service_pb2_grpc.WalletServiceServicer):
    def __init__(self, pool: asyncpg.Pool, notifier: EventNotifier) -> None:
        self._pool = pool
        self._notifier = notifier

    async def CreateWallet(
        self, request: wallet_service_pb2.CreateWalletRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.CreateWalletResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_display_name(v, request.display_name)
        check_request_key(v, request.request_id, "request_id")
        v.raise_if_any()
        created = await create_wallet(
            self._pool, request.company_id, request.display_name, request.request_id
        )
        return wallet_service_pb2.CreateWalletResponse(
            wallet=wallet_of_row(created.wallet), replayed=created.replayed
        )

    async def GetWallet(
        self, request: wallet_service_pb2.GetWalletRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.GetWalletResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        v.raise_if_any()
        return wallet_service_pb2.GetWalletResponse(
            wallet=wallet_of_row(await get_wallet(self._pool, request.company_id))
        )

    # --- Wallet operations (issue 3) -----------------------------------------------------------------

    async def ListWalletTransactions(
        self, request: wallet_service_pb2.ListWalletTransactionsRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.ListWalletTransactionsResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            v.add("page_size", f"must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})")
        types = []
        for index, kind in enumerate(request.types):
            name = _TYPE_NAMES.get(kind)
            if name is None:
                v.add(f"types[{index}]", "must be a known TRANSACTION_TYPE_ value, not UNSPECIFIED")
            else:
                types.append(name)
        start = _optional_time(v, request.HasField("start_time"), request.start_time, "start_time")
        end = _optional_time(v, request.HasField("end_time"), request.end_time, "end_time")
        if start is not None and end is not None and end <= start:
            v.add("end_time", "must be after start_time")
        v.raise_if_any()
        query = TransactionQuery(request.company_id, tuple(types), start, end)
        page = await list_transactions(
            self._pool, query, request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return wallet_service_pb2.ListWalletTransactionsResponse(
            transactions=[transaction_of_row(r) for r in page.entries], next_page_token=page.next_page_token
        )

    async def CreditWallet(
        self, request: wallet_service_pb2.CreditWalletRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.CreditWalletResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        amount_nanos = 0
        if not request.HasField("amount"):
            v.add("amount", "is required")
        else:
            try:
                amount_nanos = nanos_of(request.amount)
            except MoneyError as exc:
                v.add("amount", str(exc))
        kind = _CREDIT_KINDS.get(request.kind)
        if kind is None:
            v.add("kind", "must be CREDIT_KIND_GOODWILL or CREDIT_KIND_CORRECTION")
        actor = request.actor or "api"
        if not v.items:
            for violation in credit_violations(amount_nanos, request.reason, actor):
                v.add(violation.field, violation.description)
        v.raise_if_any()
        assert kind is not None
        credit = await credit_wallet(
            self._pool, request.company_id, amount_nanos, request.reason, request.request_id, kind, actor
        )
        row = await self._pool.fetchrow(
            "select * from ledger_entries where company_id = $1 and sequence = $2",
            credit.company_id,
            credit.ledger_sequence,
        )
        assert row is not None
        return wallet_service_pb2.CreditWalletResponse(
            transaction=transaction_of_row(row), replayed=credit.replayed
        )

    async def AuthorizeUsage(
        self, request: wallet_service_pb2.AuthorizeUsageRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.AuthorizeUsageResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        usage = parse_usage(v, request.usage)
        duration = DEFAULT_HOLD_DURATION
        if request.HasField("hold_duration"):
            given = request.hold_duration
            if given.nanos != 0:
                v.add("hold_duration", "must be whole seconds")
            elif not MIN_HOLD_DURATION.total_seconds() <= given.seconds <= MAX_HOLD_DURATION.total_seconds():
                v.add("hold_duration", f"must be between {MIN_HOLD_DURATION} and {MAX_HOLD_DURATION}")
            else:
                duration = timedelta(seconds=given.seconds)
        v.raise_if_any()
        assert usage is not None
        result = await authorize_usage(self._pool, request.company_id, usage, request.request_id, duration)
        reply = wallet_service_pb2.AuthorizeUsageResponse(
            allowed=result.allowed,
            amount=money(result.amount_nanos),
            available_balance=money(result.available_nanos),
            replayed=result.replayed,
        )
        if result.hold is not None:
            reply.hold.CopyFrom(hold_message(result.hold))
        if result.denial is not None:
            reply.denial = _DENIALS[result.denial]
            reply.denial_message = result.denial_message
        return reply

    async def ReleaseHold(
        self, request: wallet_service_pb2.ReleaseHoldRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.ReleaseHoldResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        hold_id = parse_uuid(v, request.hold_id, "hold_id")
        v.raise_if_any()
        assert hold_id is not None
        hold = await release_hold(self._pool, request.company_id, hold_id)
        return wallet_service_pb2.ReleaseHoldResponse(hold=hold_message(hold))

    async def WatchWalletEvents(
        self, request: wallet_service_pb2.WatchWalletEventsRequest, context: ServicerContext[Any, Any]
    ) -> AsyncIterator[wallet_service_pb2.WatchWalletEventsResponse]:
        v = Violations()
        if request.all_companies:
            if request.company_id:
                v.add("company_id", "must be empty when all_companies is set")
        else:
            check_company_id(v, request.company_id)
        v.raise_if_any()
        company_id = None if request.all_companies else request.company_id
        async for event in watch_events(self._pool, self._notifier, company_id, request.cursor):
            yield wallet_service_pb2.WatchWalletEventsResponse(
                event=wallet_events_pb2.WalletEvent(
                    event_id=event.event_id,
                    company_id=event.company_id,
                    sequence=event.sequence,
                    type=event.event_type,
                    payload_json=event.payload_json,
                    created_at=timestamp(event.created_at),
                    cursor=event.cursor,
                )
            )
