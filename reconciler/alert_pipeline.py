"""The alert step as the service sees it: a finished pass report in, Teams messages out (via the outbox).

Owns the mapping from a `PassReport` to `notify` inputs (drift still present after the pass,
why a target is blind, what the reconciler did) and the heartbeat. Must not decide alert rules.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import httpx

from reconciler.alerts import AlertRules
from reconciler.drift import DriftCode
from reconciler.notify import heartbeat, notify
from reconciler.outbox import AlertStore
from reconciler.service import PassReport
from reconciler.settings import Settings
from reconciler.teams import TeamsWebhook


class AlertPipeline:
    def __init__(
        self,
        store: AlertStore,
        sender: TeamsWebhook,
        rules: AlertRules,
        drift_url: str,
        heartbeat_url: str | None,
        client: httpx.AsyncClient,
    ) -> None:
        self.store = store
        self.sender = sender
        self.rules = rules
        self.drift_url = drift_url
        self.heartbeat_url = heartbeat_url
        self.client = client

    async def after_pass(self, report: PassReport, now: datetime) -> dict[str, Any]:
        # A locked target was not observed by this pass: leave its alerts to the pass that holds it.
        seen = [t for t in report.targets if t.status != "locked"]
        drifts = [d for t in seen for d in t.remaining]
        blind: dict[str, str] = {}
        for t in seen:
            reasons = [d.message for d in t.remaining if d.code == DriftCode.OBSERVATION_FAILED]
            reasons += [f"{stage}: {msg}" for stage, msg in t.errors]
            if reasons:
                blind[t.target] = "; ".join(reasons)[:500]
        actions: dict[str, tuple[str, str]] = {}
        for t in seen:
            for o in t.outcomes:
                for identity in o.step.fixes:
                    actions[identity] = (o.step.describe(), o.outcome)
        result = await notify(
            self.store,
            self.sender,
            drifts,
            blind,
            [t.target for t in seen],
            actions,
            now,
            self.rules,
            report.pass_id,
            self.drift_url,
            {t.target: t.changed_by.describe() for t in seen if t.changed_by is not None},
        )
        out: dict[str, Any] = asdict(result)
        if self.heartbeat_url and not report.errors:
            out["heartbeat"] = await heartbeat(self.heartbeat_url, self.client)
        return out


def rules_from(settings: Settings) -> AlertRules:
    if settings.alert_hold_down is None:
        return AlertRules()
    hold = timedelta(seconds=settings.alert_hold_down)
    return AlertRules(hold_down={c: hold for c in DriftCode}, default_hold_down=hold, blind_for=hold)


async def build_alert_pipeline(settings: Settings, stack: AsyncExitStack) -> AlertPipeline | None:
    """The pipeline when a Teams webhook is configured; None otherwise (alerts off)."""
    if settings.teams_webhook_url is None:
        return None
    client = httpx.AsyncClient()
    stack.push_async_callback(client.aclose)
    store = AlertStore(settings.storage_connection.get_secret_value(), settings.table_prefix)
    stack.push_async_callback(store.close)
    sender = TeamsWebhook(settings.teams_webhook_url.get_secret_value(), client)
    hb = settings.heartbeat_url.get_secret_value() if settings.heartbeat_url else None
    return AlertPipeline(store, sender, rules_from(settings), f"{settings.public_base_url}/api/drift", hb, client)
