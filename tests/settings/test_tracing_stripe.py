"""A Stripe call made during an RPC is a child span of the RPC's server span (httpx, under `stripe`)."""

from __future__ import annotations

from consofta.billing.v1 import settings_service_pb2 as pb
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.settings.conftest import StripeWorld


async def test_stripe_calls_are_child_spans_of_the_rpc(
    traced: InMemorySpanExporter, stripe_world: StripeWorld
) -> None:
    company = await stripe_world.new_company("traced-co")
    traced.clear()
    await stripe_world.settings.StartCardSetup(
        pb.StartCardSetupRequest(company_id=company, request_id="setup-1")
    )
    spans = traced.get_finished_spans()
    (server,) = [
        s for s in spans if s.kind == SpanKind.SERVER and s.name.endswith("SettingsService/StartCardSetup")
    ]
    stripe = [
        s
        for s in spans
        if s.kind == SpanKind.CLIENT
        and s.context.trace_id == server.context.trace_id
        and str((s.attributes or {}).get("url.full", (s.attributes or {}).get("http.url", ""))).startswith(
            stripe_world.fake.url
        )
    ]
    assert stripe, [(s.name, dict(s.attributes or {})) for s in spans]
    assert all(s.parent is not None and s.parent.span_id == server.context.span_id for s in stripe)
    assert any("/v1/setup_intents" in str(dict(s.attributes or {}).values()) for s in stripe)
