"""Traces through the SDK's in-memory exporter: a server span per RPC with the database work as its
children, a caller's trace continued, the trace id on the canonical log line, and off by default."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from consofta.billing.v1 import usage_pb2, usage_service_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service import tracing
from service.server import BillingServer
from tests.conftest import Stubs

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
RECORD_USAGE = "/consofta.billing.v1.UsageService/RecordUsage"


@contextmanager
def info_lines() -> Iterator[list[MutableMapping[str, Any]]]:
    """capture_logs() at DEBUG: the suite logs at WARNING, and the canonical line is INFO."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def test_tracing_is_off_unless_the_standard_variables_ask_for_it() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert tracing.wanted(endpoint)
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert tracing.start({}) is None
    assert tracing.active() is None and tracing.trace_id() is None


async def test_an_rpc_is_a_server_span_with_its_database_spans_and_its_log_line_has_the_trace_id(
    traced: InMemorySpanExporter, app: BillingServer, stubs: Stubs
) -> None:
    company = await stubs.new_company()
    traced.clear()
    # A caller that traces sends W3C trace context: the server's span continues the caller's trace.
    traceparent = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
    with info_lines() as lines:
        await stubs.usage.RecordUsage(
            usage_service_pb2.RecordUsageRequest(
                company_id=company,
                idempotency_key="traced-1",
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=10)),
            ),
            metadata=(("traceparent", traceparent),),
        )
    spans = traced.get_finished_spans()
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.name == RECORD_USAGE
    assert format(server.context.trace_id, "032x") == CALLER_TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    # The RPC's statements, not the health probe's or the recharge loop's (traces of their own).
    database = [
        s
        for s in spans
        if s.attributes
        and s.attributes.get("db.system") == "postgresql"
        and s.context.trace_id == server.context.trace_id
    ]
    assert database, [s.name for s in spans]
    assert all(s.parent is not None and s.parent.span_id == server.context.span_id for s in database)
    assert any("record_usage" in str(s.attributes.get("db.statement", "")) for s in database)
    (line,) = [line for line in lines if line["event"] == "rpc" and line["method"] == RECORD_USAGE]
    assert line["trace_id"] == CALLER_TRACE_ID


async def test_health_checks_are_not_traced(
    traced: InMemorySpanExporter, app: BillingServer, stubs: Stubs
) -> None:
    traced.clear()
    health = health_pb2_grpc.HealthStub(stubs.channel)
    assert (
        await health.Check(health_pb2.HealthCheckRequest())
    ).status == health_pb2.HealthCheckResponse.SERVING
    assert [s for s in traced.get_finished_spans() if s.kind == SpanKind.SERVER] == []


async def test_without_tracing_the_log_line_has_no_trace_id(app: BillingServer, stubs: Stubs) -> None:
    company = await stubs.new_company()
    with info_lines() as lines:
        await stubs.usage.RecordUsage(
            usage_service_pb2.RecordUsageRequest(
                company_id=company,
                idempotency_key="untraced-1",
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1)),
            )
        )
    (line,) = [line for line in lines if line["event"] == "rpc" and line["method"] == RECORD_USAGE]
    assert "trace_id" not in line
