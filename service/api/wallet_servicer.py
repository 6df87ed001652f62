"""WalletService: create and read wallets."""

from __future__ import annotations

from typing import Any

import asyncpg
from consofta.billing.v1 import wallet_service_pb2, wallet_service_pb2_grpc
from grpc.aio import ServicerContext

from service.api.convert import money, timestamp
from service.api.reporting_servicer import WalletReporting
from service.api.validation import Violations, check_company_id, check_display_name, check_request_key
from service.app.wallets import create_wallet, get_wallet


def wallet_of_row(row: asyncpg.Record) -> wallet_service_pb2.Wallet:
    return wallet_service_pb2.Wallet(
        company_id=row["company_id"],
        display_name=row["display_name"],
        balance=money(row["balance_nanos"]),
        minimum_balance=money(row["minimum_balance_nanos"]),
        last_ledger_sequence=row["last_sequence"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
    )


class WalletServicer(WalletReporting, wallet_service_pb2_grpc.WalletServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
