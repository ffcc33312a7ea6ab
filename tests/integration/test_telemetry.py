"""No secrets in telemetry: what the httpx instrumentation hands the exporter, with our span
processor in front (as function_app installs it) and, as a control, without it."""

from __future__ import annotations

import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from localenv.webhook import WebhookReceiver
from reconciler.notify import heartbeat
from reconciler.teams import TeamsWebhook
from reconciler.telemetry import RedactingSpanProcessor

CODE = "functionKeyCODE0123456789abcdef"  # a non-`sig` query secret (a Functions key)
SIG = "SECRETsig0123456789abcdefXYZ"
PATH_SECRET = "hb0123456789abcdef0123456789abcd"  # a heartbeat service's secret path


def exported(spans: InMemorySpanExporter) -> str:
    out = []
    for span in spans.get_finished_spans():
        out.append(span.name)
        out += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
        out += [str(e.attributes) for e in span.events]
    return "\n".join(out)


async def run_traffic(webhook: WebhookReceiver, redact: bool) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    if redact:
        provider.add_span_processor(RedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    base = webhook.url.split("/workflows/")[0]
    hook_url = f"{base}{webhook.path}&code={CODE}".replace("sig=", f"sig={SIG}&x=")
    async with httpx.AsyncClient() as client:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
        await TeamsWebhook(hook_url, client, max_attempts=1).send(b"{}", "k")
        await heartbeat(f"{base}/ping/{PATH_SECRET}", client)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("late") as span:  # an attribute set after start
        span.set_attribute("url.full", f"{base}/ping/{PATH_SECRET}?token={CODE}")
    return exporter


async def test_spans_carry_no_webhook_heartbeat_or_query_secret(webhook: WebhookReceiver) -> None:
    text = exported(await run_traffic(webhook, redact=True))
    assert "url.full=" in text or "http.url=" in text  # the spans are there, with their URLs…
    for secret in (CODE, SIG, PATH_SECRET):
        assert secret not in text, secret  # …without the secrets
    assert "/workflows/" in text or "[redacted]" in text


def test_without_the_processor_the_exporter_sees_the_secrets(webhook: WebhookReceiver) -> None:
    """Negative control: the detector above can fail (this is what Application Insights got)."""
    import asyncio

    text = exported(asyncio.run(run_traffic(webhook, redact=False)))
    assert CODE in text and PATH_SECRET in text


def test_an_exception_recorded_on_a_span_carries_no_registered_secret(webhook: WebhookReceiver) -> None:
    """An error message that quotes the webhook URL (an exception event, the span's status) leaves
    the process redacted too, not only the attributes."""
    from opentelemetry.trace import Status, StatusCode

    from reconciler import teams

    base = webhook.url.split("/workflows/")[0]
    hook_url = f"{base}{webhook.path}".replace("sig=", f"sig={SIG}&x=")
    teams.protect(hook_url)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("send") as span:
        span.record_exception(RuntimeError(f"cannot post to {hook_url}"))
        span.set_status(Status(StatusCode.ERROR, f"failed: {hook_url}"))
    [done] = exporter.get_finished_spans()
    text = exported(exporter) + f"\n{done.status.description}"
    assert "cannot post to" in text and "failed:" in text  # the messages are there…
    assert SIG not in text  # …without the secret
