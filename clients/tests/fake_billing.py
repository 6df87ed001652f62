"""A small hand-written billing server for the client's tests: the generated servicers on a real gRPC
server (port 0), with a script of failures to play before answering.

It keeps records by (company, idempotency key) the way the real service does, so a repeated key is a
replay and never a second debit, and it remembers every attempt with its metadata and deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from google.type.money_pb2 import Money

CERTS = Path(__file__).parent / "certs"
EMAIL_NANOS = 675_000


@dataclass(frozen=True)
class Attempt:
    method: str
    request: usage_service_pb2.RecordUsageRequest | wallet_service_pb2.CreateWalletRequest | None
    metadata: dict[str, str]
    time_remaining_s: float | None


@dataclass(frozen=True)
class Fail:
    """Answer the next attempt with this status (and rich details), before doing anything."""

    code: grpc.StatusCode
    message: str = "scripted failure"
    details: tuple[any_pb2.Any, ...] = ()
    request_id: str | None = None


@dataclass(frozen=True)
class Stall:
    """Never answer the next attempt: the client's deadline expires."""


@dataclass(frozen=True)
class LoseResponse:
    """Do the work (commit), then fail with `code` as if the response was lost on the way back."""

    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


Step = Fail | Stall | LoseResponse


def packed(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped


@dataclass
class FakeBilling(usage_service_pb2_grpc.UsageServiceServicer, wallet_service_pb2_grpc.WalletServiceServicer):
    script: list[Step] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    balances_nanos: dict[str, int] = field(default_factory=dict)
    records: dict[tuple[str, str], usage_service_pb2.RecordUsageResponse] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _begin(
        self,
        method: str,
        request: usage_service_pb2.RecordUsageRequest | wallet_service_pb2.CreateWalletRequest | None,
        context: grpc.ServicerContext,
    ) -> Step | None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.attempts.append(Attempt(method, request, metadata, context.time_remaining()))
            return self.script.pop(0) if self.script else None

    def _play(self, step: Step | None, context: grpc.ServicerContext) -> None:
        if isinstance(step, Fail):
            status = status_pb2.Status(
                code=getattr(code_pb2, step.code.name), message=step.message, details=list(step.details)
            )
            trailing: list[tuple[str, str | bytes]] = [
                ("grpc-status-details-bin", status.SerializeToString())
            ]
            if step.request_id:
                trailing.append(("x-request-id", step.request_id))
            context.set_trailing_metadata(tuple(trailing))
            context.abort(step.code, step.message)
        if isinstance(step, Stall):
            done = threading.Event()
            context.add_callback(done.set)  # runs when the client gives up (deadline or cancel)
            done.wait(timeout=30)
            context.abort(grpc.StatusCode.CANCELLED, "stalled")

    def RecordUsage(
        self, request: usage_service_pb2.RecordUsageRequest, context: grpc.ServicerContext
    ) -> usage_service_pb2.RecordUsageResponse:
        step = self._begin("RecordUsage", request, context)
        self._play(step, context)
        if request.company_id not in self.balances_nanos:
            info = error_details_pb2.ErrorInfo(
                reason="COMPANY_NOT_FOUND",
                domain="billing.consofta.com",
                metadata={"company_id": request.company_id},
            )
            self._play(Fail(grpc.StatusCode.NOT_FOUND, "no such company", (packed(info),)), context)
        with self._lock:
            key = (request.company_id, request.idempotency_key)
            if key in self.records:
                replay = usage_service_pb2.RecordUsageResponse()
                replay.CopyFrom(self.records[key])
                replay.replayed = True
                reply = replay
            else:
                amount_nanos = EMAIL_NANOS * request.usage.email.count
                self.balances_nanos[request.company_id] -= amount_nanos
                reply = usage_service_pb2.RecordUsageResponse(
                    usage_record=usage_pb2.UsageRecord(
                        company_id=request.company_id,
                        idempotency_key=request.idempotency_key,
                        usage=request.usage,
                        price=usage_pb2.Price(amount=Money(currency_code="USD", nanos=amount_nanos)),
                    ),
                    balance_after=Money(currency_code="USD", nanos=self.balances_nanos[request.company_id]),
                )
                self.records[key] = reply
        if isinstance(step, LoseResponse):
            context.abort(step.code, "connection lost after the commit")
        return reply

    def CreateWallet(
        self, request: wallet_service_pb2.CreateWalletRequest, context: grpc.ServicerContext
    ) -> wallet_service_pb2.CreateWalletResponse:
        self._play(self._begin("CreateWallet", request, context), context)
        with self._lock:
            self.balances_nanos.setdefault(request.company_id, 0)
        return wallet_service_pb2.CreateWalletResponse(
            wallet=wallet_service_pb2.Wallet(company_id=request.company_id, display_name=request.display_name)
        )

    def GetWallet(
        self, request: wallet_service_pb2.GetWalletRequest, context: grpc.ServicerContext
    ) -> wallet_service_pb2.GetWalletResponse:
        self._play(self._begin("GetWallet", None, context), context)
        balance = self.balances_nanos.get(request.company_id, 0)
        return wallet_service_pb2.GetWalletResponse(
            wallet=wallet_service_pb2.Wallet(
                company_id=request.company_id, balance=Money(currency_code="USD", nanos=balance)
            )
        )

    def keys(self, method: str = "RecordUsage") -> list[str]:
        """The idempotency keys (request ids for CreateWallet) of every attempt at `method`."""
        found: list[str] = []
        for attempt in self.attempts:
            if attempt.method != method:
                continue
            if isinstance(attempt.request, usage_service_pb2.RecordUsageRequest):
                found.append(attempt.request.idempotency_key)
            elif isinstance(attempt.request, wallet_service_pb2.CreateWalletRequest):
                found.append(attempt.request.request_id)
        return found


@contextmanager
def serving(fake: FakeBilling, *, tls: bool = False) -> Iterator[str]:
    """Serve `fake` on 127.0.0.1, port 0; yields the target. With tls, the server demands a client cert."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(fake, server)
    wallet_service_pb2_grpc.add_WalletServiceServicer_to_server(fake, server)
    if tls:
        credentials = grpc.ssl_server_credentials(
            [((CERTS / "server.key").read_bytes(), (CERTS / "server.pem").read_bytes())],
            root_certificates=(CERTS / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def new_fake_billing(**kwargs: Any) -> FakeBilling:
    """The fake implements only the RPCs the client tests call; every other RPC answers UNIMPLEMENTED,
    as the generated base classes do. The .pyi stubs mark those abstract, hence the one ignore here
    instead of a stub method per RPC that would need updating whenever the contract grows."""
    return FakeBilling(**kwargs)  # type: ignore[abstract]
