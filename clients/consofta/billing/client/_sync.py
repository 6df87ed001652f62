# Generated from _async.py by `python3 dev.py gen` (scripts/gen_sync_client.py); do not edit by hand.
# Change _async.py and regenerate: tests/client/test_sync_client_generated.py fails on any drift.
"""The billing service's client, with deadlines, safe retries and typed errors.

`AsyncBillingClient` (grpc.aio) is written in `_async.py`; `BillingClient` (a blocking channel) in
`_sync.py` is generated from it by `python3 dev.py gen` (scripts/gen_sync_client.py, with unasync), so
the two cannot drift apart. Edit `_async.py` only, in code that a token rewrite turns into blocking code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import grpc
from consofta.billing.client import _requests as rq
from consofta.billing.client._common import DEFAULT_TIMEOUT_S, Metadata, call_metadata
from consofta.billing.client.auth import InsecureTokenError, TlsConfig, bearer_metadata
from consofta.billing.client.errors import from_rpc_error, status_code
from consofta.billing.client.retry import RetryEvent, RetryPolicy
from consofta.billing.v1 import (
    settings_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.protobuf.message import Message

if TYPE_CHECKING:
    from consofta.billing.v1.settings_service_pb2_grpc import SettingsServiceStub
    from consofta.billing.v1.usage_service_pb2_grpc import UsageServiceStub
    from consofta.billing.v1.wallet_service_pb2_grpc import WalletServiceStub

_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)


class BillingClient:
    """A client of the billing service: `AsyncBillingClient` for asyncio code (create it inside the running
    event loop), `BillingClient` for blocking code (threads, scripts, WSGI apps). The two are the same
    client, one with coroutines and one blocking.

        async with AsyncBillingClient("billing.internal:50051", bearer_token=token) as billing:
            reply = await billing.record_email("acme", 1000)

        with BillingClient("billing.internal:50051", bearer_token=token) as billing:
            reply = billing.record_email("acme", 1000)

    Every call has a deadline per attempt (`timeout_s`, default 5 s, changeable per call) and is retried
    on UNAVAILABLE, ABORTED and DEADLINE_EXCEEDED under `retry`. A mutation's idempotency key is fixed
    before the first attempt (generated when not given), so a retry never debits twice. A failed call
    raises a `BillingError` subclass (see `consofta.billing.client.errors`).

    The raw stubs (`usage`, `wallet`, `settings`) stay reachable for anything the convenience methods
    do not cover. Calls made on them directly get no deadline, retry or metadata unless given
    (`metadata=client.metadata()`, `timeout=...`); `client.call(client.settings.GetCard, req)` gives
    them all.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: TlsConfig | None = None,
        bearer_token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        request_id: Callable[[], str | None] | None = None,
        channel_options: Sequence[tuple[str, str | int]] = (),
        allow_insecure_token: bool = False,
    ) -> None:
        """
        target: "host:port" (any gRPC target string, e.g. "dns:///billing.internal:50051").
        tls: None for plaintext; TlsConfig() for TLS with the system roots; with a client cert, mTLS.
        bearer_token: sent as `authorization: Bearer <token>` on every call. Refused on a plaintext
            channel (tls=None), where anyone on the path could read and replay it, unless
            allow_insecure_token=True (a loopback address, or a mesh that encrypts the traffic).
        timeout_s: the default deadline of each attempt.
        retry: the retry policy; RetryPolicy() by default, `NO_RETRY` to turn retries off.
        request_id: returns the request id to forward as `x-request-id` when a call gives none (e.g. the
            id of the request this service is handling, read from a contextvar).
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if bearer_token is not None and tls is None and not allow_insecure_token:
            raise InsecureTokenError(
                "refusing to send bearer_token over a plaintext channel: give tls=TlsConfig(...), or "
                "allow_insecure_token=True where the path is trusted (e.g. loopback)"
            )
        self._auth = bearer_metadata(bearer_token)
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._request_id = request_id
        options = list(channel_options)
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            options.extend(tls.channel_options())
            self._channel = grpc.secure_channel(target, tls.channel_credentials(), options=options)
        self._usage: UsageServiceStub = usage_service_pb2_grpc.UsageServiceStub(self._channel)
        self._wallet: WalletServiceStub = wallet_service_pb2_grpc.WalletServiceStub(self._channel)
        self._settings: SettingsServiceStub = settings_service_pb2_grpc.SettingsServiceStub(self._channel)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BillingClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- raw access --------------------------------------------------------------------------------------

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    @property
    def usage(self) -> UsageServiceStub:
        """The generated UsageService stub on this client's channel."""
        return self._usage

    @property
    def wallet(self) -> WalletServiceStub:
        """The generated WalletService stub on this client's channel."""
        return self._wallet

    @property
    def settings(self) -> SettingsServiceStub:
        """The generated SettingsService stub on this client's channel."""
        return self._settings

    def metadata(self, request_id: str | None = None) -> Metadata:
        """The metadata this client sends (bearer token, request id), for calls made on the raw stubs."""
        return call_metadata(self._auth, request_id or (self._request_id() if self._request_id else None))

    def call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> _Resp:
        """Call any unary RPC with this client's deadline, retries, metadata and error decoding.

        The request is sent unchanged on every attempt: a mutation must already carry its idempotency
        key (the convenience methods set one).
        """
        timeout = self._timeout_s if timeout_s is None else timeout_s
        metadata = self.metadata(request_id)
        attempt = 1
        while True:
            try:
                return method(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as error:
                code = status_code(error)
                if not self._retry.should_retry(code, attempt):
                    raise from_rpc_error(error, attempts=attempt) from error
                delay_s = self._retry.delay_s(attempt)
                if self._retry.on_retry is not None:
                    self._retry.on_retry(RetryEvent(_method_name(method), attempt, code, delay_s))
            time.sleep(delay_s)
            attempt += 1

    # -- UsageService ------------------------------------------------------------------------------------

    def record_usage(
        self,
        request: usage_service_pb2.RecordUsageRequest,
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> usage_service_pb2.RecordUsageResponse:
        """RecordUsage with a request built by hand; an empty idempotency key is filled in once."""
        return self.call(
            self._usage.RecordUsage, rq.with_key(request), timeout_s=timeout_s, request_id=request_id
        )

    def record_usage_batch(
        self,
        requests: Sequence[usage_service_pb2.RecordUsageRequest],
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> usage_service_pb2.RecordUsageBatchResponse:
        """RecordUsageBatch: up to 1,000 usages in one call, one result per item in order (`recorded`, or
        `error`, a google.rpc.Status). Each item without a key gets one before the first attempt, so a
        retry of the whole call replays the items already applied instead of debiting them again."""
        batch = usage_service_pb2.RecordUsageBatchRequest(items=[rq.with_key(r) for r in requests])
        return self.call(self._usage.RecordUsageBatch, batch, timeout_s=timeout_s, request_id=request_id)

    def record(
        self,
        company: str,
        kind: str,
        *,
        idempotency_key: str | None = None,
        occurred_at: rq.When | None = None,
        hold_id: str | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
        **fields: object,
    ) -> usage_service_pb2.RecordUsageResponse:
        """Debit one usage of any `kind` the contract has, its message built from `fields` by `usage()`:
        `record("acme", "call", direction="inbound", number_type="local", duration_seconds=61)`. A usage
        type added to the proto can be recorded this way with no change to the client."""
        usage = rq.usage(kind, **fields)
        request = rq.record_usage_request(company, usage, idempotency_key, occurred_at, hold_id)
        return self.call(self._usage.RecordUsage, request, timeout_s=timeout_s, request_id=request_id)

    def record_email(
        self,
        company: str,
        count: int,
        *,
        idempotency_key: str | None = None,
        occurred_at: rq.When | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> usage_service_pb2.RecordUsageResponse:
        """Debit `count` emails sent by `company`."""
        request = rq.record_usage_request(company, rq.email_usage(count), idempotency_key, occurred_at)
        return self.call(self._usage.RecordUsage, request, timeout_s=timeout_s, request_id=request_id)

    def record_call(
        self,
        company: str,
        direction: rq.CallDirection,
        number_type: rq.NumberType,
        seconds: int,
        *,
        idempotency_key: str | None = None,
        occurred_at: rq.When | None = None,
        hold_id: str | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> usage_service_pb2.RecordUsageResponse:
        """Debit one call of `seconds` (billed per started minute), capturing `hold_id` when given."""
        usage = rq.call_usage(direction, number_type, seconds)
        request = rq.record_usage_request(company, usage, idempotency_key, occurred_at, hold_id)
        return self.call(self._usage.RecordUsage, request, timeout_s=timeout_s, request_id=request_id)

    def record_sms(
        self,
        company: str,
        direction: rq.SmsDirection,
        *,
        body: str | None = None,
        segments: int | None = None,
        idempotency_key: str | None = None,
        occurred_at: rq.When | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> usage_service_pb2.RecordUsageResponse:
        """Debit one text message, given by its `body` (segments counted by the service) or `segments`."""
        usage = rq.sms_usage(direction, body, segments)
        request = rq.record_usage_request(company, usage, idempotency_key, occurred_at)
        return self.call(self._usage.RecordUsage, request, timeout_s=timeout_s, request_id=request_id)

    # -- WalletService -----------------------------------------------------------------------------------

    def authorize_call(
        self,
        company: str,
        direction: rq.CallDirection,
        number_type: rq.NumberType,
        max_seconds: int,
        *,
        hold_seconds: int | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> wallet_service_pb2.AuthorizeUsageResponse:
        """May `company` start a call of up to `max_seconds`? When `.allowed`, `.hold.id` reserves its price
        until the call is recorded with `record_call(..., hold_id=...)` or released (default 1 hour)."""
        usage = rq.call_usage(direction, number_type, max_seconds)
        request = rq.authorize_usage_request(company, usage, idempotency_key, hold_seconds)
        return self.call(self._wallet.AuthorizeUsage, request, timeout_s=timeout_s, request_id=request_id)

    def release_hold(
        self, company: str, hold_id: str, *, timeout_s: float | None = None, request_id: str | None = None
    ) -> wallet_service_pb2.ReleaseHoldResponse:
        """Release an unused hold (e.g. the call never connected). Releasing twice is harmless."""
        request = wallet_service_pb2.ReleaseHoldRequest(company_id=company, hold_id=hold_id)
        return self.call(self._wallet.ReleaseHold, request, timeout_s=timeout_s, request_id=request_id)

    def create_wallet(
        self,
        company: str,
        display_name: str,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> wallet_service_pb2.CreateWalletResponse:
        """Create a company and its empty wallet; `idempotency_key` is the request's `request_id`."""
        request = rq.create_wallet_request(company, display_name, idempotency_key)
        return self.call(self._wallet.CreateWallet, request, timeout_s=timeout_s, request_id=request_id)

    def get_wallet(
        self, company: str, *, timeout_s: float | None = None, request_id: str | None = None
    ) -> wallet_service_pb2.GetWalletResponse:
        """The company's wallet (balance, minimum balance, newest ledger sequence) in `.wallet`."""
        request = wallet_service_pb2.GetWalletRequest(company_id=company)
        return self.call(self._wallet.GetWallet, request, timeout_s=timeout_s, request_id=request_id)


def _method_name(method: object) -> str:
    # The multicallables keep the full method path privately; it is only used to label retry events.
    name = getattr(method, "_method", b"")
    return name.decode() if isinstance(name, bytes) else str(name)
