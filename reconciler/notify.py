"""The alert step: the one module the service (and the poison-queue trigger) calls to tell on-call.

Owns the order load states → evaluate → cards → outbox → save → flush (it is what makes alerts
survive restarts and Teams outages), the mapping from a pass report to alert inputs, and the
dead-man's-switch heartbeat. API: `AlertStep.after_pass`, `AlertStep.poisoned`, `build`.
Must not decide alert rules (alerts), lay out cards (cards) or speak HTTP (teams).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from reconciler import teams
from reconciler.alerts import AlertRules, AlertState, evaluate
from reconciler.cards import build_messages, serialize
from reconciler.drift import Drift, DriftCode, failed_reads
from reconciler.errors import ReconcilerError
from reconciler.outbox import AlertStore, FlushReport, Sender, idempotency_key
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler.service import PassReport

log = logging.getLogger(__name__)


class AlertRepository(Protocol):
    """What the alert step needs from storage (reconciler.outbox.AlertStore)."""

    async def load_states(self, targets: Collection[str]) -> dict[str, AlertState]: ...

    async def save_states(self, states: Mapping[str, AlertState], targets: Collection[str]) -> None: ...

    async def enqueue(self, target: str, payload: bytes, key: str) -> bool: ...

    async def flush(self, sender: Sender, targets: Collection[str] | None = None) -> FlushReport: ...


@dataclass(frozen=True)
class NotifyReport:
    notifications: int  # decided this pass
    messages: int  # cards built this pass (one per target with news)
    enqueued: int  # of those, newly queued (a retried pass id queues nothing twice)
    delivery: FlushReport  # this pass's messages and any left over from earlier passes


async def notify(
    store: AlertRepository,
    sender: Sender,
    drifts: Sequence[Drift],
    blind: Mapping[str, str],
    targets: Collection[str],
    actions: Mapping[str, tuple[str, str]] | None,
    now: datetime,
    rules: AlertRules,
    pass_id: str,
    drift_url: str,
) -> NotifyReport:
    """Run the alert step for `targets`. Storage failures raise (TransientError/PermanentError);
    delivery failures do not: the messages stay in the outbox and the report says so."""
    targets = sorted(set(targets))
    states = await store.load_states(targets)
    new_states, notes = evaluate(states, drifts, blind, targets, now, rules, actions)
    messages = build_messages(notes, drift_url)
    enqueued = 0
    # Queue before saving states: a crash in between re-decides the same notifications on the
    # retried pass, and the idempotency key (pass id + target) keeps them from queuing twice.
    # The other order could lose a resolution for good.
    for target, message in messages.items():
        if await store.enqueue(target, serialize(message), idempotency_key(pass_id, target)):
            enqueued += 1
    await store.save_states(new_states, targets)
    delivery = await store.flush(sender, targets)
    for error in delivery.errors:
        log.warning("alert delivery: %s", teams.redact(error))
    log.info(
        "alerts: %d notification(s) in %d message(s), %d queued; delivered %d, %d still queued",
        len(notes), len(messages), enqueued, delivery.sent, delivery.pending,
    )
    return NotifyReport(notifications=len(notes), messages=len(messages), enqueued=enqueued, delivery=delivery)


async def heartbeat(url: str, client: httpx.AsyncClient) -> bool:
    """Ping the dead-man's switch after a completed pass. False (and a warning) if it failed:
    a missed ping is exactly what the switch is for, so it must not fail the pass."""
    try:
        await teams.ping(url, client)
    except ReconcilerError as exc:
        log.warning("heartbeat: %s", teams.redact(str(exc)))
        return False
    return True


class AlertStep:
    """The alert step of a worker: built once by `build`, called after every pass."""

    def __init__(
        self,
        store: AlertRepository,
        sender: Sender,
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
        """Alerts for every target the pass observed, then the heartbeat when the pass had no error."""
        # A locked target was not observed by this pass: leave its alerts to the pass that holds it.
        seen = [t for t in report.targets if t.status != "locked"]
        drifts = [d for t in seen for d in t.remaining]
        blind: dict[str, str] = {}
        for t in seen:
            reasons = [d.message for d in failed_reads(t.remaining)]
            reasons += [f"{stage}: {msg}" for stage, msg in t.errors]
            if reasons:
                blind[t.target] = "; ".join(reasons)[:500]
        actions: dict[str, tuple[str, str]] = {}
        for t in seen:
            for o in t.outcomes:
                for identity in o.step.fixes:
                    actions[identity] = (o.step.describe(), o.outcome)
        result = await notify(
            self.store, self.sender, drifts, blind, [t.target for t in seen], actions, now, self.rules,
            report.pass_id, self.drift_url,
        )
        out: dict[str, Any] = asdict(result)
        if self.heartbeat_url and not report.errors:
            out["heartbeat"] = await heartbeat(self.heartbeat_url, self.client)
        return out

    async def poisoned(self, target: str, reason: str, now: datetime) -> dict[str, Any]:
        """A fan-out message for `target` was poisoned: its passes keep failing, so the reconciler
        cannot see that target. Said as "reconciler blind" at once: the host's tries already took
        minutes, so the blind hold-down (one failed read is routine) has been served."""
        rules = replace(self.rules, blind_for=timedelta(0))
        result = await notify(
            self.store, self.sender, [], {target: f"fanout: poison message: {reason}"[:500]}, [target], None,
            now, rules, f"poison-{now:%Y%m%dT%H%M%S}", self.drift_url,
        )
        return asdict(result)


def rules_from(settings: Settings) -> AlertRules:
    if settings.alert_hold_down is None:
        return AlertRules()
    hold = timedelta(seconds=settings.alert_hold_down)
    return AlertRules(hold_down={c: hold for c in DriftCode}, default_hold_down=hold, blind_for=hold)


async def build(settings: Settings, stack: AsyncExitStack) -> AlertStep | None:
    """The alert step when a Teams webhook is configured; None otherwise (alerts off, by setting)."""
    if settings.teams_webhook_url is None:
        return None
    client = httpx.AsyncClient()
    stack.push_async_callback(client.aclose)
    store = AlertStore(settings.storage_connection.get_secret_value(), settings.table_prefix)
    stack.push_async_callback(store.close)
    sender = teams.TeamsWebhook(settings.teams_webhook_url.get_secret_value(), client)
    hb = settings.heartbeat_url.get_secret_value() if settings.heartbeat_url else None
    return AlertStep(store, sender, rules_from(settings), f"{settings.public_base_url}/api/drift", hb, client)
