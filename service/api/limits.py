"""Per-caller and per-method limits, so that no one caller can starve the others.

* Open WatchWalletEvents streams per caller (`caller_id`): past the cap, RESOURCE_EXHAUSTED.
* Heavy reads (statements, exports, usage summaries) running at once, per method and process: past
  the limit, RESOURCE_EXHAUSTED at once instead of queueing for pool connections that RecordUsage needs.

Both are counted in this process only; a caller spread over replicas gets each replica's allowance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from consofta.billing.v1 import usage_service_pb2, wallet_service_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc.aio import ServicerContext

from service.api.caller import caller_id
from service.config import Config
from service.domain.errors import TooManyConcurrentCalls, TooManyStreams


def method_path(file: FileDescriptor, service: str, method: str) -> str:
    """The gRPC path of a method (`/package.Service/Method`), read from the contract."""
    return f"/{file.services_by_name[service].full_name}/{method}"


WATCH_EVENTS = method_path(wallet_service_pb2.DESCRIPTOR, "WalletService", "WatchWalletEvents")
GET_STATEMENT = method_path(wallet_service_pb2.DESCRIPTOR, "WalletService", "GetStatement")
EXPORT = method_path(wallet_service_pb2.DESCRIPTOR, "WalletService", "ExportWalletTransactions")
GET_USAGE_SUMMARY = method_path(usage_service_pb2.DESCRIPTOR, "UsageService", "GetUsageSummary")


class CallLimits:
    def __init__(self, config: Config) -> None:
        self.streams_per_caller = config.watch_streams_per_caller
        self.method_limits = {
            GET_STATEMENT: config.max_concurrent_statements,
            EXPORT: config.max_concurrent_exports,
            GET_USAGE_SUMMARY: config.max_concurrent_summaries,
        }
        self.running = dict.fromkeys(self.method_limits, 0)
        self.streams: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(self, method: str, context: ServicerContext[Any, Any]) -> Iterator[None]:
        """Count the call against its per-method limit while it runs; raise if it is reached.

        The per-caller stream cap is not taken here, at the edge, but by WatchWalletEvents itself
        (`stream`), which runs after authentication, so that it counts against the principal."""
        if method in self.method_limits:
            with self._concurrent(method):
                yield
        else:
            yield

    def stream(self, context: ServicerContext[Any, Any]) -> contextlib.AbstractContextManager[None]:
        """Count one open event stream against its caller while it runs; raise past the cap."""
        return self._stream(caller_id(context))

    @contextlib.contextmanager
    def _stream(self, caller: str) -> Iterator[None]:
        held = self.streams.get(caller, 0)
        if held >= self.streams_per_caller:
            raise TooManyStreams(
                f"at most {self.streams_per_caller} open event streams per caller; close one first",
                metadata={"limit": str(self.streams_per_caller)},
            )
        self.streams[caller] = held + 1
        try:
            yield
        finally:
            left = self.streams[caller] - 1
            if left:
                self.streams[caller] = left
            else:
                del self.streams[caller]

    @contextlib.contextmanager
    def _concurrent(self, method: str) -> Iterator[None]:
        limit = self.method_limits[method]
        if self.running[method] >= limit:
            name = method.rsplit("/", 1)[-1]
            raise TooManyConcurrentCalls(
                f"at most {limit} {name} calls run at once on this server; retry with backoff",
                metadata={"method": name, "limit": str(limit)},
            )
        self.running[method] += 1
        try:
            yield
        finally:
            self.running[method] -= 1
