"""The running agent reports FRR changes it did not make (NVA_AGENT_REPORT_URL set): a vtysh edit
reaches the reconciler's endpoint (here a local receiver) signed and verifiable, within seconds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from localenv.webhook import WebhookReceiver
from nva_agent.app import create_app
from nva_agent.settings import AgentSettings
from reconciler.change_report import ChangedBy, report_key, verify
from tests.unit.test_agent_change_reports import TOKEN, FakeFrr


async def test_the_running_agent_reports_an_outside_edit(webhook: WebhookReceiver) -> None:
    frr = FakeFrr()
    app = create_app(AgentSettings(token=TOKEN, lab=True, report_url=webhook.url, report_ip="10.0.1.6"), frr=frr)
    async with app.router.lifespan_context(app):
        await asyncio.sleep(1.5)  # the watcher's first read is its baseline
        t0 = time.monotonic()
        frr.config = "router bgp 65001\n"  # `no network 0.0.0.0/0`, typed into vtysh
        while not webhook.requests() and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.05)
        took = time.monotonic() - t0
    got = webhook.requests()
    assert got and took < 3.0  # within about a second (1 s polling)
    report = verify(dict(got[0].headers), got[0].body, report_key(TOKEN), datetime.now(UTC))
    assert report.by is ChangedBy.OUTSIDE and report.nva_ip == "10.0.1.6"


async def test_without_a_report_url_nothing_is_sent(webhook: WebhookReceiver) -> None:
    frr = FakeFrr()
    app = create_app(AgentSettings(token=TOKEN, lab=True), frr=frr)
    async with app.router.lifespan_context(app):
        frr.config = "edited"
        await asyncio.sleep(1.5)
    assert webhook.requests() == []
