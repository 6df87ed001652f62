"""WalletService: create and read wallets, their history, manual credits, holds and the event stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
from consofta.billing.v1 import wallet_service_pb2, wallet_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.auth import audit_principal_id
from service.api.validation import (
    Violations,
    check_company_id,
    check_display_name,
    check_ordered,
    check_request_key,
    parse_moment,
)
from service.api.wallet_reporting import WalletReporting
from service.api.wire.money import MoneyError, money, nanos_of
from service.api.wire.usage import parse_usage
from service.api.wire.wallets import (
    CREDIT_KINDS,
    TRANSACTION_TYPES,
    authorization_response,
    event_message,
    extension_response,
    hold_message,
    transaction_message,
    wallet_message,
)
from service.app.corrections import void_usage_record
from service.app.credits import CreditKind, credit_violations, credit_wallet, debit_wallet
from service.app.event_reader import EventNotifier
from service.app.event_streams import watch_events
from service.app.holds import (
    DEFAULT_HOLD_DURATION,
    MAX_HOLD_DURATION,
    MAX_HOLD_EXTENSION_QUANTITY,
    MIN_HOLD_DURATION,
    authorize_usage,
    extend_hold,
    release_hold,
)
from service.app.transactions import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, TransactionQuery, list_transactions
from service.app.wallets import create_wallet, get_wallet


def _amount(
    v: Violations,
    request: wallet_service_pb2.DebitWalletRequest | wallet_service_pb2.VoidUsageRecordRequest,
    *,
    required: bool,
) -> int | None:
    if not request.HasField("amount"):
        if required:
            v.add("amount", "is required")
        return None
    try:
        return nanos_of(request.amount)
    except MoneyError as exc:
        v.add("amount", str(exc))
        return None


def _hold_duration(
    v: Violations, request: wallet_service_pb2.AuthorizeUsageRequest | wallet_service_pb2.ExtendHoldRequest
) -> timedelta:
    if not request.HasField("hold_duration"):
        return DEFAULT_HOLD_DURATION
    given = request.hold_duration
    if given.nanos != 0:
        v.add("hold_duration", "must be whole seconds")
    elif not MIN_HOLD_DURATION.total_seconds() <= given.seconds <= MAX_HOLD_DURATION.total_seconds():
        v.add("hold_duration", f"must be between {MIN_HOLD_DURATION} and {MAX_HOLD_DURATION}")
    else:
        return timedelta(seconds=given.seconds)
    return DEFAULT_HOLD_DURATION


def parse_uuid(v: Violations, value: str, field: str) -> uuid.UUID | None:
    if not value:
        v.add(field, "is required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        v.add(field, "must be a UUID, as returned by AuthorizeUsage")
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
            wallet=wallet_message(created.wallet), replayed=created.replayed
        )

    async def GetWallet(
        self, request: wallet_service_pb2.GetWalletRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.GetWalletResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        v.raise_if_any()
        wallet = await get_wallet(self._pool, request.company_id)
        return wallet_service_pb2.GetWalletResponse(wallet=wallet_message(wallet))

    async def ListWalletTransactions(
        self, request: wallet_service_pb2.ListWalletTransactionsRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.ListWalletTransactionsResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            v.add("page_size", f"must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})")
        types = []
        for index, kind in enumerate(request.types):
            name = TRANSACTION_TYPES.domain(kind)
            if name is None:
                v.add(f"types[{index}]", "must be a known TRANSACTION_TYPE_ value, not UNSPECIFIED")
            else:
                types.append(name)
        start = parse_moment(
            v, request.HasField("start_time"), request.start_time, "start_time", required=False
        )
        end = parse_moment(v, request.HasField("end_time"), request.end_time, "end_time", required=False)
        check_ordered(v, start, end, "start_time", "end_time")
        v.raise_if_any()
        query = TransactionQuery(request.company_id, tuple(types), start, end)
        page = await list_transactions(
            self._pool, query, request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return wallet_service_pb2.ListWalletTransactionsResponse(
            transactions=[transaction_message(e) for e in page.entries], next_page_token=page.next_page_token
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
        kind = CREDIT_KINDS.domain(request.kind)
        if kind is None:
            v.add("kind", f"must be {CREDIT_KINDS.choices()}")
        # `actor` is who the credit is on behalf of; the principal is recorded beside it, always.
        actor = request.actor or audit_principal_id()
        if not v.items:
            for violation in credit_violations(amount_nanos, request.reason, actor):
                v.add(violation.field, violation.description)
        v.raise_if_any()
        credit_kind: CreditKind = "adjustment" if kind == "adjustment" else "manual_credit"
        credit = await credit_wallet(
            self._pool,
            request.company_id,
            amount_nanos,
            request.reason,
            request.request_id,
            credit_kind,
            actor,
            principal_id=audit_principal_id(),
        )
        return wallet_service_pb2.CreditWalletResponse(
            transaction=transaction_message(credit.entry), replayed=credit.replayed
        )

    async def DebitWallet(
        self, request: wallet_service_pb2.DebitWalletRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.DebitWalletResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        amount_nanos = _amount(v, request, required=True) or 0
        actor = request.actor or audit_principal_id()
        if not v.items:
            for violation in credit_violations(amount_nanos, request.reason, actor):
                v.add(violation.field, violation.description)
        v.raise_if_any()
        debit = await debit_wallet(
            self._pool,
            request.company_id,
            amount_nanos,
            request.reason,
            request.request_id,
            actor,
            principal_id=audit_principal_id(),
        )
        return wallet_service_pb2.DebitWalletResponse(
            transaction=transaction_message(debit.entry), replayed=debit.replayed
        )

    async def VoidUsageRecord(
        self, request: wallet_service_pb2.VoidUsageRecordRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.VoidUsageRecordResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        record_id = parse_uuid(v, request.usage_record_id, "usage_record_id")
        amount_nanos = _amount(v, request, required=False)
        actor = request.actor or audit_principal_id()
        # Every broken rule at once: the reason and actor are checked whatever else is wrong (an
        # unreadable amount is checked as 1 nano, so it is not reported twice).
        checked = 1 if amount_nanos is None else amount_nanos
        for violation in credit_violations(checked, request.reason, actor):
            v.add(violation.field, violation.description)
        v.raise_if_any()
        assert record_id is not None
        void = await void_usage_record(
            self._pool,
            request.company_id,
            record_id,
            request.reason,
            request.request_id,
            actor,
            amount_nanos,
            principal_id=audit_principal_id(),
        )
        return wallet_service_pb2.VoidUsageRecordResponse(
            transaction=transaction_message(void.entry),
            record_amount=money(void.record_amount_nanos),
            voided_amount=money(void.voided_nanos),
            replayed=void.replayed,
        )

    async def AuthorizeUsage(
        self, request: wallet_service_pb2.AuthorizeUsageRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.AuthorizeUsageResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        check_request_key(v, request.request_id, "request_id")
        usage = parse_usage(v, request.usage)
        duration = _hold_duration(v, request)
        v.raise_if_any()
        assert usage is not None
        result = await authorize_usage(
            self._pool, request.company_id, usage, request.request_id, duration, request.allow_partial
        )
        return authorization_response(result)

    async def ExtendHold(
        self, request: wallet_service_pb2.ExtendHoldRequest, context: ServicerContext[Any, Any]
    ) -> wallet_service_pb2.ExtendHoldResponse:
        v = Violations()
        check_company_id(v, request.company_id)
        hold_id = parse_uuid(v, request.hold_id, "hold_id")
        check_request_key(v, request.request_id, "request_id")
        if not 1 <= request.additional_quantity <= MAX_HOLD_EXTENSION_QUANTITY:
            v.add("additional_quantity", f"must be between 1 and {MAX_HOLD_EXTENSION_QUANTITY:,}")
        duration = _hold_duration(v, request)
        v.raise_if_any()
        assert hold_id is not None
        result = await extend_hold(
            self._pool,
            request.company_id,
            hold_id,
            request.request_id,
            request.additional_quantity,
            duration,
            request.allow_partial,
        )
        return extension_response(result)

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
            yield wallet_service_pb2.WatchWalletEventsResponse(event=event_message(event))
