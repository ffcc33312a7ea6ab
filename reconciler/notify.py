"""The alert step: the one module the service (and the poison-queue trigger) calls to tell on-call.

Owns the order load states → evaluate → cards → outbox → save → flush (it is what makes alerts
survive restarts and Teams outages), the mapping from a target's pass report to alert inputs, the
"fixed automatically" notices, un-announcing what Teams refused for good, and the dead-man's-switch
heartbeat. API: `AlertStep.after_target` (under the target's lease), `AlertStep.after_pass`,
`AlertStep.poisoned`, and `build`. Must not decide alert rules (alerts), group or lay out cards
(incident, cards) or speak HTTP (teams).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from reconciler import storage, teams
from reconciler.alerts import AlertRules, AlertState, Announced, Kind, evaluate, undelivered
from reconciler.cards import AutoFix, Card, Links, build_cards, fallback_card, serialize
from reconciler.desired import Target
from reconciler.drift import Drift, DriftCode, failed_reads
from reconciler.errors import ReconcilerError
from reconciler.outbox import AlertStore, FlushReport, OutboxEntry, Sender, idempotency_key
from reconciler.outcome import ActionOutcome
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler.service import PassReport, TargetReport

log = logging.getLogger(__name__)

# Dead letters count against /api/health for this long, then they are history.
DEAD_LETTER_WINDOW = timedelta(hours=24)


class AlertRepository(Protocol):
    """What the alert step needs from storage (reconciler.outbox.AlertStore)."""

    async def load_states(self, targets: Collection[str]) -> dict[str, AlertState]: ...

    async def save_states(self, states: Mapping[str, AlertState], targets: Collection[str]) -> None: ...

    async def enqueue(
        self, target: str, payload: bytes, key: str, announces: Mapping[str, str] | None = None
    ) -> bool: ...

    async def flush(self, sender: Sender, targets: Collection[str] | None = None) -> FlushReport: ...

    async def dead_letters(self, target: str, since: datetime) -> list[OutboxEntry]: ...


@dataclass(frozen=True)
class NotifyReport:
    notifications: int  # decided this pass
    messages: int  # cards built this pass (one per incident, plus fixed notices)
    enqueued: int  # of those, newly queued (a retried pass id queues nothing twice)
    delivery: FlushReport  # this pass's messages and any left over from earlier passes
    problems: tuple[str, ...] = field(default=())  # alert-step failures on-call must hear of (health: degraded)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the pass report: dead letters by name, never their payload bytes."""
        delivery = {k: v for k, v in asdict(self.delivery).items() if k != "dead"}
        delivery["errors"] = list(self.delivery.errors)
        delivery["dead"] = [{"target": e.target, "seq": e.seq, "attempts": e.attempts, "error": e.last_error[:200]}
                            for e in self.delivery.dead]
        return {"notifications": self.notifications, "messages": self.messages, "enqueued": self.enqueued,
                "delivery": delivery, "problems": list(self.problems)}


async def notify(
    store: AlertRepository,
    sender: Sender,
    drifts: Sequence[Drift],
    blind: Mapping[str, str],
    targets: Mapping[str, Target | None] | Collection[str],
    actions: Mapping[str, tuple[str, str]] | None,
    now: datetime,
    rules: AlertRules,
    pass_id: str,
    links: Links | str,
    *,
    skipped: Mapping[str, str] | None = None,
    fixes: Sequence[AutoFix] = (),
    changed_by: Mapping[str, str] | None = None,
) -> NotifyReport:
    """Run the alert step for `targets`. Storage failures raise (TransientError/PermanentError);
    nothing else does: a card that cannot be built or sent is a problem in the report, and the
    other cards still go."""
    places = dict(targets) if isinstance(targets, Mapping) else dict.fromkeys(targets)
    names = sorted(places)
    link = links if isinstance(links, Links) else Links(links)
    states = await store.load_states(names)
    new_states, notes = evaluate(states, drifts, blind, names, now, rules, actions, skipped)
    # A fix of something the channel already heard about is its resolved card, not a notice.
    fixes = [f for f in fixes if (st := states.get(f.identity)) is None or st.announced == Announced.NONE]
    if changed_by:
        # Who made the change that started this pass (per target), on what it announces now.
        notes = [replace(n, changed_by=changed_by.get(n.target, n.changed_by)) for n in notes]
    cards, problems = build_cards(notes, link, {k: v for k, v in places.items() if v is not None}, pass_id,
                                  fixes, now)
    enqueued = 0
    # Queue before saving states: a crash in between re-decides the same notifications on the
    # retried pass, and the idempotency key (pass id + target + card) keeps them from queuing
    # twice. The other order could lose a resolution for good.
    for card in cards:
        payload = _payload(card, link, pass_id, problems)
        key = idempotency_key(pass_id, f"{card.target}\n{card.key}")
        if await store.enqueue(card.target, payload, key, dict(card.announces)):
            enqueued += 1
    await store.save_states(new_states, names)
    delivery = await store.flush(sender, names)
    for error in delivery.errors:
        log.warning("alert delivery: %s", teams.redact(error))
    if delivery.dead:
        # Teams refused these for good: the channel never heard them, so they are not announced.
        revived = undelivered(new_states, {i: Kind(k) for e in delivery.dead for i, k in e.announces.items()}, now)
        await store.save_states(revived, names)
        problems += [f"{e.target}: a card was dead-lettered after {e.attempts} rejection(s): "
                     f"{teams.redact(e.last_error)[:200]}" for e in delivery.dead]
    for name in names:
        older = [e for e in await store.dead_letters(name, now - DEAD_LETTER_WINDOW) if e not in delivery.dead]
        if older:
            problems.append(f"{name}: {len(older)} dead-lettered card(s) in the last 24 h (see the outbox)")
    for problem in problems:
        log.error("alert step: %s", teams.redact(problem))
    log.info(
        "alerts: %d notification(s) in %d message(s), %d queued; delivered %d, %d still queued",
        len(notes), len(cards), enqueued, delivery.sent, delivery.pending,
    )
    return NotifyReport(len(notes), len(cards), enqueued, delivery, tuple(problems))


def _payload(card: Card, links: Links, pass_id: str, problems: list[str]) -> bytes:
    """The card's bytes; a card that cannot be serialised is replaced by a plain one that still
    tells on-call where to look (and the failure is a problem, not a stopped alert step)."""
    try:
        return serialize(card.message)
    except (UnicodeError, ValueError, TypeError) as exc:
        problems.append(f"{card.target}: card {card.key} could not be serialised ({type(exc).__name__})")
        return serialize(fallback_card(card.target, links, pass_id))


async def heartbeat(url: str, client: httpx.AsyncClient) -> bool:
    """Ping the dead-man's switch after a completed pass. False (and a warning) if it failed:
    a missed ping is exactly what the switch is for, so it must not fail the pass."""
    try:
        await teams.ping(url, client)
    except ReconcilerError as exc:
        log.warning("heartbeat: %s", teams.redact(str(exc)))
        return False
    return True


def fixed_within(report: TargetReport) -> list[AutoFix]:
    """Drifts this pass found and a step fixed (confirmed by re-observation) before anyone was told."""
    remaining = {d.identity for d in report.remaining}
    found = {d.identity: d for d in report.drifts}
    out: list[AutoFix] = []
    for o in report.outcomes:
        if o.outcome != ActionOutcome.FIXED:
            continue
        for identity in o.step.fixes:
            d = found.get(identity)
            if d is not None and identity not in remaining:
                out.append(AutoFix(report.target, d.code, d.subject, d.observed, d.expected, o.step.describe()))
    return out


class AlertStep:
    """The alert step of a worker: built once by `build`, called by the service for every target
    (under its lease) and once after every pass."""

    def __init__(
        self,
        store: AlertRepository,
        sender: Sender,
        rules: AlertRules,
        links: Links | str,
        heartbeat_url: str | None,
        client: httpx.AsyncClient,
        *,
        fixed_notice: bool = True,
    ) -> None:
        self.store = store
        self.sender = sender
        self.rules = rules
        self.links = links if isinstance(links, Links) else Links(links)
        self.heartbeat_url = heartbeat_url
        self.client = client
        self.fixed_notice = fixed_notice

    async def after_target(self, target: Target, report: TargetReport, pass_id: str, now: datetime) -> dict[str, Any]:
        """Alerts for one target of a pass. Call it while holding the target's lease: then no newer
        pass can have observed the target in between, so "resolved" is never announced from an
        older observation, and no two passes flush the target's outbox at once."""
        reasons = [d.message for d in failed_reads(report.remaining)]
        reasons += [f"{stage}: {msg}" for stage, msg in report.errors]
        blind = {target.name: "; ".join(reasons)[:500]} if reasons else {}
        actions = {i: (o.step.describe(), str(o.outcome)) for o in report.outcomes for i in o.step.fixes}
        skipped = {s.identity: str(s.reason) for s in (report.plan.skipped if report.plan else ())}
        fixes = fixed_within(report) if self.fixed_notice else []
        result = await notify(
            self.store, self.sender, report.remaining, blind, {target.name: target}, actions, now, self.rules,
            pass_id, self.links, skipped=skipped, fixes=fixes,
            changed_by={target.name: report.changed_by.describe()} if report.changed_by is not None else None,
        )
        return result.to_dict()

    async def after_pass(self, report: PassReport, now: datetime) -> dict[str, Any]:
        """After every target's alerts: their sum for the pass report, and the heartbeat when the
        pass had no error."""
        parts = [t.alerts for t in report.targets if t.alerts]
        deliveries = [d for p in parts if isinstance(d := p.get("delivery"), Mapping)]

        def total(items: Sequence[Mapping[str, object]], key: str) -> int:
            return sum(v for i in items if isinstance(v := i.get(key), int))

        def joined(items: Sequence[Mapping[str, object]], key: str) -> list[str]:
            return [str(e) for i in items if isinstance(v := i.get(key), list | tuple) for e in v]

        out: dict[str, Any] = {key: total(parts, key) for key in ("notifications", "messages", "enqueued")}
        out["delivery"] = {key: total(deliveries, key) for key in ("sent", "failed", "pending", "rejected")}
        out["delivery"]["errors"] = joined(deliveries, "errors")
        out["problems"] = joined(parts, "problems")
        if self.heartbeat_url and not report.errors:
            out["heartbeat"] = await heartbeat(self.heartbeat_url, self.client)
        return out

    async def poisoned(self, target: str | Target, reason: str, now: datetime) -> dict[str, Any]:
        """A fan-out message for `target` was poisoned: its passes keep failing, so the reconciler
        cannot see that target. Said as "reconciler blind" at once (no hold-down: the host already
        retried it for minutes)."""
        name = target if isinstance(target, str) else target.name
        place = None if isinstance(target, str) else target
        result = await notify(
            self.store, self.sender, [], {name: f"fanout: poison message: {reason}"[:500]}, {name: place}, None,
            now, replace(self.rules, blind_for=timedelta(0)), f"poison-{now:%Y%m%dT%H%M%S}", self.links,
        )
        return result.to_dict()


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
    access = storage.from_settings(settings)  # a connection string, or the managed identity
    stack.push_async_callback(access.close)
    store = AlertStore(access, settings.table_prefix)
    stack.push_async_callback(store.close)
    sender = teams.TeamsWebhook(settings.teams_webhook_url.get_secret_value(), client)
    hb = settings.heartbeat_url.get_secret_value() if settings.heartbeat_url else None
    return AlertStep(store, sender, rules_from(settings), Links(settings.public_base_url), hb, client,
                     fixed_notice=settings.alert_fixed_notice)
