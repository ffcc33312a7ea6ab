"""Secrets stay secret when things fail: agent 401, Teams 500, storage down.

Runs failing passes with every logger at DEBUG (the Azure SDK's HTTP logging, httpx, httpcore,
aiohttp included) and collects everything a person could read afterwards -- log records, the
pass reports as JSON, error strings and reprs, the ledger's rows, the outbox, the cards that
reached Teams, and the spans Application Insights would export (an in-memory exporter behind the
same span processor function_app installs) -- then asserts that no agent token, webhook URL, `sig=` value or storage account
key appears in any of it.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from emulator import ArmEmulator
from localenv.azurite import ACCOUNT_KEY, Azurite
from localenv.webhook import Reply, WebhookReceiver
from reconciler.composition import Runtime
from reconciler.ledger import Ledger
from reconciler.outbox import AlertStore
from reconciler.service import PassReport
from reconciler.settings import load_settings
from reconciler.telemetry import RedactingSpanProcessor
from tests.e2e.harness import NVA, TOKEN_SETTINGS, A, B, break_next_hop, fleet_desired, run_pass, settings_env

pytestmark = [pytest.mark.azurite, pytest.mark.usefixtures("settled")]

TOKENS = {A: "agent-token-SECRET-a1b2c3d4e5f6", B: "agent-token-SECRET-0f9e8d7c6b5a"}
WRONG_TOKEN = "agent-token-SECRET-sent-but-wrong-77aa"
NOISY_LOGGERS = ("", "azure", "azure.core.pipeline.policies.http_logging_policy", "httpx", "httpcore", "aiohttp",
                 "reconciler", "urllib3")  # fmt: skip


def secrets(hook: WebhookReceiver) -> dict[str, str]:
    url = hook.url
    parts = urlsplit(url)
    sig = dict(parse_qsl(parts.query))["sig"]
    found = {
        "agent token A": TOKENS[A],
        "agent token B": TOKENS[B],
        "wrong agent token that was sent": WRONG_TOKEN,
        "webhook URL": url,
        "webhook path + query": f"{parts.path}?{parts.query}",
        "webhook sig": sig,
        "webhook sig (url-encoded)": quote(sig, safe=""),
        "storage account key": ACCOUNT_KEY,
        "storage account key (url-encoded)": quote(ACCOUNT_KEY, safe=""),
    }
    return found


def leaks(text: str, hook: WebhookReceiver) -> list[str]:
    return [name for name, value in secrets(hook).items() if value in text]


async def test_failing_passes_reveal_no_token_webhook_url_sig_or_storage_key(
    emulator: ArmEmulator, private_azurite: Azurite, storage_prefix: str, webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
) -> None:
    for name in NOISY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    with emulator.world.lock:
        for target, token in TOKENS.items():
            emulator.world.nva(NVA[target]).agent_token = token
    monkeypatch.setenv(TOKEN_SETTINGS[A], WRONG_TOKEN)  # agent A answers 401
    monkeypatch.setenv(TOKEN_SETTINGS[B], TOKENS[B])
    webhook.default = Reply(500, retry_after="0", body=b'{"error":{"code":"InternalServerError"}}')
    env = settings_env(emulator, private_azurite.connection_string, storage_prefix,
                       ARS_TEAMS_WEBHOOK_URL=webhook.url, ARS_HEARTBEAT_URL=webhook.url)
    break_next_hop(emulator, A)
    break_next_hop(emulator, B)
    readable: list[str] = []
    reports: list[PassReport] = []
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())  # as function_app gives configure_azure_monitor
    provider.add_span_processor(SimpleSpanProcessor(spans))
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    request.addfinalizer(HTTPXClientInstrumentor().uninstrument)
    settings = load_settings(env)
    readable += [repr(settings), str(settings.model_dump())]
    async with Runtime(settings) as rt:
        readable.append(repr(rt.services))
        reports.append(await run_pass(rt, fleet_desired(emulator)))  # agent 401 on A, Teams 500
        private_azurite.stop()
        reports.append(await run_pass(rt, fleet_desired(emulator)))  # and now storage is down too
        try:
            await rt.ledger.open_drifts()
        except Exception as exc:  # what an operator's `status` would print
            readable += [str(exc), repr(exc), repr(exc.__cause__)]
        private_azurite.start()
        reports.append(await run_pass(rt, fleet_desired(emulator)))
    # The failures really happened (otherwise this test proves nothing).
    first = reports[0]
    a = next(t for t in first.targets if t.target == A)
    assert any("401" in d.message for d in a.drifts), a.to_dict()
    assert first.alerts["delivery"]["failed"] > 0
    assert any(s in ("lease", "ledger") for t in reports[1].targets for s, _ in t.errors)
    assert webhook.requests() and all(r.status == 500 for r in webhook.requests())

    readable += [json.dumps(r.to_dict(), default=str) for r in reports]
    readable += [record.getMessage() for record in caplog.records]
    readable += [repr(record.args) for record in caplog.records]
    readable += [caplog.text]
    async with Ledger(private_azurite.connection_string, table_prefix=storage_prefix) as led:
        readable += [json.dumps(h, default=str) for h in await led.history(limit=500)]
        readable += [repr(p) for p in await led.passes(limit=100)]
        readable += [repr(d) for d in await led.open_drifts()]
    async with AlertStore(private_azurite.connection_string, storage_prefix) as store:
        for target in (A, B):
            readable += [repr(e) + e.payload.decode() for e in await store.entries(target)]
    readable += [r.body.decode("utf-8", "replace") for r in webhook.requests()]
    exported = spans.get_finished_spans()
    posts = [dict(x.attributes or {}) for x in exported if x.name == "POST"]
    assert posts and all("[redacted]" in str(a.get("http.url", a.get("url.full"))) for a in posts)  # traced, scrubbed
    readable += [f"{x.name} {dict(x.attributes or {})} {[e.attributes for e in x.events]}" for x in exported]
    assert len(caplog.records) > 50  # the SDKs' HTTP logging was really on
    assert "webhook sig" in leaks(webhook.requests()[0].path, webhook)  # negative control: the detector works
    found = {name for text in readable for name in leaks(text, webhook)}
    assert found == set(), f"secrets leaked: {sorted(found)}"
