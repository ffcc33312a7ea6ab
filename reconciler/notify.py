"""The alert step of one reconcile pass: load states → evaluate → cards → outbox → save → flush.

Owns the order of those steps (it is what makes alerts survive restarts and Teams outages) and the
dead-man's-switch heartbeat. Must not know HTTP details, card layout or alert rules.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from reconciler import teams
from reconciler.alerts import AlertRules, AlertState, evaluate
from reconciler.cards import build_messages, serialize
from reconciler.drift import Drift
from reconciler.errors import ReconcilerError
from reconciler.outbox import FlushReport, Sender, idempotency_key

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class AlertRepository(Protocol):
    """What notify needs from storage (reconciler.outbox.AlertStore)."""

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
    changed_by: Mapping[str, str] | None = None,
) -> NotifyReport:
    """Run the alert step for `targets`. Storage failures raise (TransientError/PermanentError);
    delivery failures do not: the messages stay in the outbox and the report says so."""
    targets = sorted(set(targets))
    states = await store.load_states(targets)
    new_states, notes = evaluate(states, drifts, blind, targets, now, rules, actions)
    if changed_by:
        # Who made the change that started this pass (per target), on what it announces now.
        notes = [replace(n, changed_by=changed_by.get(n.target, n.changed_by)) for n in notes]
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
