"""Helpers for the wallet tests: funding, cards, and reading event streams through the stubs."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    wallet_events_pb2,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)

from service.api.wire.money import money, nanos_of
from tests.conftest import Stubs

# A generous bound for "this should arrive": a hang fails the test instead of stalling the suite.
ARRIVAL_TIMEOUT_S = 10.0


async def credit(
    stubs: Stubs, company: str, amount_nanos: int, request_id: str | None = None, reason: str = "goodwill"
) -> wallet_service_pb2.CreditWalletResponse:
    return await stubs.wallet.CreditWallet(
        wallet_service_pb2.CreditWalletRequest(
            company_id=company,
            amount=money(amount_nanos),
            reason=reason,
            request_id=request_id or f"credit-{uuid.uuid4().hex}",
        )
    )


async def add_card(pool: asyncpg.Pool, company: str) -> None:
    """A card on file, as the settings issue stores it (only the row matters here)."""
    await pool.execute(
        """
        insert into payment_cards (company_id, payment_method_id, brand, last4, exp_month, exp_year)
        values ($1, 'pm_test', 'visa', '4242', 12, 2040)
        """,
        company,
    )


async def get_wallet(stubs: Stubs, company: str) -> wallet_service_pb2.Wallet:
    reply = await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
    return reply.wallet


async def available_nanos(stubs: Stubs, company: str) -> int:
    return nanos_of((await get_wallet(stubs, company)).available_balance)


def emails(count: int) -> usage_pb2.Usage:
    return usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count))


def outbound_call(seconds: int) -> usage_pb2.Usage:
    return usage_pb2.Usage(
        call=usage_pb2.CallUsage(
            direction=usage_pb2.CALL_DIRECTION_OUTBOUND,
            number_type=usage_pb2.NUMBER_TYPE_LOCAL,
            duration_seconds=seconds,
        )
    )


def record(
    company: str, key: str, usage: usage_pb2.Usage, hold_id: str = ""
) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company, idempotency_key=key, usage=usage, hold_id=hold_id
    )


class EventReader:
    """One WatchWalletEvents call; `take(n)` reads the next n events, failing instead of hanging."""

    def __init__(
        self,
        stub: wallet_service_pb2_grpc.WalletServiceAsyncStub,
        request: wallet_service_pb2.WatchWalletEventsRequest,
    ) -> None:
        self.call = stub.WatchWalletEvents(request)
        self._iter = self.call.__aiter__()

    async def take(self, count: int) -> list[wallet_events_pb2.WalletEvent]:
        async def read() -> list[wallet_events_pb2.WalletEvent]:
            out: list[wallet_events_pb2.WalletEvent] = []
            while len(out) < count:
                reply = await self._iter.__anext__()
                out.append(reply.event)
            return out

        return await asyncio.wait_for(read(), ARRIVAL_TIMEOUT_S)

    def cancel(self) -> None:
        self.call.cancel()


def watch(
    stub: wallet_service_pb2_grpc.WalletServiceAsyncStub,
    company: str = "",
    cursor: str = "",
    *,
    all_companies: bool = False,
) -> EventReader:
    return EventReader(
        stub,
        wallet_service_pb2.WatchWalletEventsRequest(
            company_id=company, cursor=cursor, all_companies=all_companies
        ),
    )


def is_rpc_error(exc: BaseException, code: grpc.StatusCode) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() is code
