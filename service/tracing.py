"""OpenTelemetry tracing: off unless the standard OTEL_* variables ask for it.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or
`OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`), unless `OTEL_SDK_DISABLED=true`. The rest is
the SDK's own reading of the standard variables: `OTEL_SERVICE_NAME` (default `consofta-billing`),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (`http/protobuf`,
the default, or `grpc`), headers, timeouts.

What is traced: a server span for every RPC (opentelemetry-instrumentation-grpc, continuing a caller's
`traceparent`), a child span for each database statement (asyncpg) and each Stripe HTTP call (httpx,
which the `stripe` library uses). Health checks and reflection are left out: probes would drown the rest.
The trace id goes on the RPC's canonical log line (`service.api.request_log`), so logs and traces join.

Nothing of OpenTelemetry is imported while tracing is off: the hot path then pays one `is None` test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME = "consofta-billing"
_TRUE = frozenset({"true", "1", "yes"})
_EXPORTERS = frozenset({"otlp", "console"})


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (the OTEL_* variables; empty counts as unset)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporters = {name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()}
    if exporters == {"none"}:
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(endpoint) or bool(exporters & _EXPORTERS)


@dataclass
class Tracing:
    """Tracing switched on for this process: its provider, and the gRPC server interceptor to install."""

    provider: TracerProvider
    server_interceptor: Any
    _instrumentors: tuple[Any, ...]

    def shutdown(self) -> None:
        """Flush what is buffered and take the database and HTTP instrumentation off again."""
        global _active
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()
        if _active is self:
            _active = None


# The one Tracing of the process, if any: read by `trace_id()` on every canonical log line.
_active: Tracing | None = None


def _exporters_from(env: Mapping[str, str]) -> list[SpanExporter]:
    names = {name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()}
    found: list[SpanExporter] = []
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        found.append(ConsoleSpanExporter())
    if "otlp" in names:
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            found.append(Grpc())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

            found.append(Http())
    return found


def start(env: Mapping[str, str] | None = None, *, exporter: SpanExporter | None = None) -> Tracing | None:
    """Switch tracing on when the environment asks for it, or always when given an `exporter` (tests
    pass the SDK's in-memory one, which then gets every span as soon as it ends). None when off."""
    global _active
    env = os.environ if env is None else env
    if exporter is None and not wanted(env):
        return None
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the fallback name.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for each in _exporters_from(env):
            provider.add_span_processor(BatchSpanProcessor(each))
    database, http = AsyncPGInstrumentor(), HTTPXClientInstrumentor()  # type: ignore[no-untyped-call]
    database.instrument(tracer_provider=provider)
    http.instrument(tracer_provider=provider)
    untraced = filters.any_of(
        filters.service_prefix("grpc.health."), filters.service_prefix("grpc.reflection.")
    )
    interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=filters.negate(untraced)
    )
    _active = Tracing(provider, interceptor, (database, http))
    return _active


def active() -> Tracing | None:
    """The process's Tracing while it is on."""
    return _active


def trace_id() -> str | None:
    """The current trace's id (32 hex digits) while tracing is on and a span is current, else None."""
    if _active is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
