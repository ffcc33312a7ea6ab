"""One reconcile pass, shared by the timer, HTTP and queue triggers and the CLI.

Owns the order of a pass (DESIGN §2): lease -> observe -> diff -> plan -> apply -> verify ->
ledger -> alerts -> report. Decisions live in the pure modules; this module only sequences the
adapters it is handed (`Services`) and turns their failures into recorded outcomes; it must not
make a decision itself or know which concrete adapter it is handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Network
from typing import Any, Protocol

from reconciler.attribution import Attribution
from reconciler.desired import DesiredState, Peer, Target
from reconciler.diff import diff, matched_connections
from reconciler.drift import Drift, is_blind
from reconciler.errors import ConfigurationError, LockedError, PermanentError, ReconcilerError, TransientError
from reconciler.ledger_state import ActionRecord, LedgerChange, PassRecord
from reconciler.observed import AgentView, Firewall, FirewallHealth, HealthStatus, Hub, Observation, Unknown
from reconciler.outcome import ActionOutcome
from reconciler.plan import Intent, Known, Plan, Step, StepKind, plan
from reconciler.trace import Trace, trace
from reconciler.trigger import Trigger

log = logging.getLogger(__name__)


# ---- ports: what the service needs from its adapters ------------------------------------------


class ArmPort(Protocol):
    async def observe(self, target: Target) -> Observation: ...
    async def put_connection(self, target: Target, name: str, peer_ip: str, peer_asn: int) -> None: ...
    async def enable_branch_to_branch(self, target: Target) -> None: ...


class AgentPort(Protocol):
    async def view(self) -> AgentView: ...
    async def apply(self, intent: Intent) -> str: ...  # a one-line summary of what changed


class AgentsPort(Protocol):
    def for_peer(self, target: Target, peer: Peer) -> AgentPort | str: ...  # str: why there is none


class LedgerPort(Protocol):
    async def record_target(
        self,
        target: str,
        drifts: Sequence[Drift],
        actions: Sequence[ActionRecord],
        now: datetime,
        *,
        blind: bool,
        pass_id: str = "",
        changed_by: Attribution | None = None,
    ) -> LedgerChange: ...
    async def record_pass(self, record: PassRecord) -> None: ...


class LeasesPort(Protocol):
    def hold(self, target: str) -> contextlib.AbstractAsyncContextManager[None]: ...


class AlertsPort(Protocol):
    """reconciler.notify.AlertStep."""

    async def after_target(
        self, target: Target, report: TargetReport, pass_id: str, now: datetime
    ) -> Mapping[str, object]: ...
    async def after_pass(self, report: PassReport, now: datetime) -> Mapping[str, object]: ...
    async def poisoned(self, target: str, reason: str, now: datetime) -> Mapping[str, object]: ...


WhoChanged = Callable[[Target, Sequence[Drift], datetime], Awaitable[Attribution | None]]


@dataclass
class Services:
    """The adapters one pass uses; built once per worker by `composition`."""

    arm: ArmPort
    agents: AgentsPort
    ledger: LedgerPort | None = None
    leases: LeasesPort | None = None
    alerts: AlertsPort | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Who made an Azure-side change the timer found (reconciler.activity_log.ActivityLog.who_changed).
    who_changed: WhoChanged | None = None
    verify_timeout: float = 90.0
    verify_interval: float = 5.0
    target_concurrency: int = 64
    # Pass records this worker could not write (storage down), oldest first; the next pass of
    # the same worker writes them before its own. Bounded: a long outage keeps the newest.
    unwritten: deque[PassRecord] = field(default_factory=lambda: deque(maxlen=UNWRITTEN_MAX))


UNWRITTEN_MAX = 500  # about 40 hours of 5-minute passes; each record is well under 1 KiB in memory


# ---- report values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutcome:
    """What became of one step of the plan (the ledger and the cards show the same value)."""

    step: Step
    outcome: ActionOutcome
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step.describe(),
            "kind": self.step.kind.value,
            "fixes": list(self.step.fixes),
            "outcome": self.outcome.value,
            "detail": self.detail,
        }


class TargetStatus(StrEnum):
    """How one target's pass ended (the report's `status`; a StrEnum, so its JSON is the word)."""

    OK = "ok"
    DRIFT = "drift"  # drift remains after the pass (found, in a dry run)
    LOCKED = "locked"  # another pass held the target's lease: nothing was done
    ERROR = "error"


@dataclass
class TargetReport:
    target: str
    status: TargetStatus = TargetStatus.OK
    drifts: list[Drift] = field(default_factory=list)
    plan: Plan | None = None
    outcomes: list[StepOutcome] = field(default_factory=list)
    remaining: list[Drift] = field(default_factory=list)  # drift still present after apply/verify
    errors: list[tuple[str, str]] = field(default_factory=list)  # (stage, message)
    ledger: dict[str, int] = field(default_factory=dict)
    alerts: Mapping[str, object] = field(default_factory=dict)
    changed_by: Attribution | None = None  # the change that asked for this pass (event-driven passes)

    def __post_init__(self) -> None:
        self.status = TargetStatus(self.status)  # "ok" from a caller becomes the member; a typo fails here

    @property
    def blind(self) -> bool:
        return is_blind(self.remaining)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status.value,
            "drifts": [d.to_dict() for d in self.drifts],
            "plan": {
                "steps": [s.describe() for s in self.plan.steps] if self.plan else [],
                "skipped": [{"identity": s.identity, "reason": s.reason} for s in self.plan.skipped]
                if self.plan
                else [],
                "notes": list(self.plan.notes) if self.plan else [],
            },
            "outcomes": [o.to_dict() for o in self.outcomes],
            "remaining": [d.to_dict() for d in self.remaining],
            "errors": [{"stage": s, "message": m} for s, m in self.errors],
            "ledger": self.ledger,
            "alerts": dict(self.alerts),
            "changed_by": self.changed_by.to_dict() if self.changed_by is not None else None,
        }


@dataclass
class PassReport:
    pass_id: str
    trigger: Trigger
    started_at: datetime
    dry_run: bool
    duration_s: float = 0.0
    targets: list[TargetReport] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    alerts: Mapping[str, object] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """CLI convention: 0 no drift, 2 drift, 1 error (a failed pass or a locked target)."""
        if self.errors or any(t.status in (TargetStatus.ERROR, TargetStatus.LOCKED) for t in self.targets):
            return 1
        # A dry run reports what it found; an apply reports what is still wrong after fixing.
        if self.dry_run:
            return 2 if any(t.drifts for t in self.targets) else 0
        return 2 if any(t.remaining for t in self.targets) else 0

    def counts(self) -> dict[str, int]:
        return {
            "targets": len(self.targets),
            "drifts": sum(len(t.drifts) for t in self.targets),
            "remaining": sum(len(t.remaining) for t in self.targets),
            "steps": sum(len(t.outcomes) for t in self.targets),
            "fixed": sum(1 for t in self.targets for o in t.outcomes if o.outcome is ActionOutcome.FIXED),
            "failed": sum(1 for t in self.targets for o in t.outcomes if o.outcome is ActionOutcome.FAILED),
            "deferred": sum(1 for t in self.targets for o in t.outcomes if o.outcome is ActionOutcome.DEFERRED),
            "locked": sum(1 for t in self.targets if t.status is TargetStatus.LOCKED),
            "errors": len(self.errors) + sum(len(t.errors) for t in self.targets),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass_id": self.pass_id,
            "trigger": self.trigger.value,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "targets": [t.to_dict() for t in self.targets],
            "errors": [{"stage": s, "message": m} for s, m in self.errors],
            "alerts": dict(self.alerts),
        }


# ---- the pass ---------------------------------------------------------------------------------


def new_pass_id() -> str:
    return uuid.uuid4().hex[:12]


async def reconcile(
    svc: Services,
    state: DesiredState,
    *,
    trigger: Trigger,
    dry_run: bool = False,
    only: str | None = None,
    pass_id: str | None = None,
    changed_by: Mapping[str, Attribution] | None = None,
) -> PassReport:
    """Run one pass over all targets (or `only`). Never raises for a target's failure: it is reported.
    `pass_id` is given when the caller announced it before the pass (an HTTP run's Location).
    `changed_by` (per target) is who made the change that started this pass (an event): drift the
    pass opens on that target is recorded as caused by it."""
    if only is not None and only not in {t.name for t in state.targets}:
        raise ConfigurationError(f"unknown target {only!r}; known: {', '.join(t.name for t in state.targets)}")
    targets = [t for t in state.targets if only is None or t.name == only]
    report = PassReport(pass_id or new_pass_id(), trigger, svc.clock(), dry_run)
    t0 = time.monotonic()
    sem = asyncio.Semaphore(svc.target_concurrency)

    async def one(t: Target) -> TargetReport:
        async with sem:
            who = changed_by.get(t.name) if changed_by else None
            return await reconcile_target(svc, t, dry_run=dry_run, pass_id=report.pass_id, changed_by=who)

    report.targets = list(await asyncio.gather(*(one(t) for t in targets)))
    report.duration_s = time.monotonic() - t0
    if not dry_run:
        await _record_pass(svc, report)
        if svc.alerts is not None:
            try:
                report.alerts = await svc.alerts.after_pass(report, svc.clock())
            except ReconcilerError as exc:
                report.errors.append(("alerts", str(exc)))
    return report


async def reconcile_target(
    svc: Services, target: Target, *, dry_run: bool, pass_id: str = "", changed_by: Attribution | None = None
) -> TargetReport:
    rep = TargetReport(target.name, changed_by=changed_by)
    try:
        async with _lease(svc, target.name, dry_run):
            try:
                await _run(svc, target, rep, dry_run=dry_run, pass_id=pass_id)
            except Exception as exc:  # still under the lease: the alert step below tells of it
                _internal_error(rep, exc, pass_id)
            if not dry_run and svc.alerts is not None:
                await _alert(svc, svc.alerts, target, rep, pass_id)
    except LockedError as exc:
        rep.status = TargetStatus.LOCKED
        rep.errors.append(("lease", str(exc)))
    except ReconcilerError as exc:
        # The lease could not be taken or kept (storage down): nothing may act without it.
        rep.status = TargetStatus.ERROR
        rep.errors.append(("lease", str(exc)))
    except Exception as exc:  # in the lease or the alert step
        _internal_error(rep, exc, pass_id)
    log.info(
        "pass %s target %s: %s, %d drift(s) found, %d step(s), %d remaining%s",
        pass_id,
        target.name,
        rep.status,
        len(rep.drifts),
        len(rep.outcomes),
        len(rep.remaining),
        "".join(f"; {stage}: {msg}" for stage, msg in rep.errors),
        extra={"pass_id": pass_id, "target": target.name},
    )
    return rep


def _internal_error(rep: TargetReport, exc: Exception, pass_id: str) -> None:
    # A bug must not take the other targets of the pass down with it: it is recorded on this
    # target (and logged with its traceback) so the pass still reports everything.
    log.exception("pass %s target %s: internal error", pass_id, rep.target, exc_info=exc)
    rep.status = TargetStatus.ERROR
    rep.errors.append(("internal", f"{type(exc).__name__}: {exc}"[:300]))


async def _alert(svc: Services, alerts: AlertsPort, target: Target, rep: TargetReport, pass_id: str) -> None:
    """The target's alert step, still under its lease: a newer pass cannot have observed the target
    yet, so nothing is announced (least of all "resolved") from an older observation."""
    try:
        rep.alerts = await alerts.after_target(target, rep, pass_id, svc.clock())
    except ReconcilerError as exc:
        rep.errors.append(("alerts", str(exc)))
        return
    problems = rep.alerts.get("problems", ())
    rep.errors.extend(("alerts", str(p)) for p in (problems if isinstance(problems, list | tuple) else ()))


@contextlib.asynccontextmanager
async def _lease(svc: Services, target: str, dry_run: bool) -> AsyncIterator[None]:
    if dry_run or svc.leases is None:
        yield
        return
    async with svc.leases.hold(target):
        yield


async def _run(svc: Services, target: Target, rep: TargetReport, *, dry_run: bool, pass_id: str) -> None:
    obs = await observe(svc, target)
    rep.drifts = diff(target, obs)
    now = svc.clock()
    if rep.changed_by is None and not dry_run and svc.who_changed is not None and rep.drifts:
        # No event told us who: ask the Activity Log (reconciler.activity_log; never fails the pass).
        # Which drift it can attribute, and to which resource, is its own table (resources_for):
        # for drift it cannot place it answers None without a request.
        rep.changed_by = await svc.who_changed(target, rep.drifts, now)
    rep.plan = plan(target, rep.drifts, known_from(target, obs), now)
    rep.remaining = rep.drifts
    record = not dry_run and svc.ledger is not None
    first: LedgerChange | None = None
    if record and rep.plan.steps:
        # Record what was found before fixing it: the ledger shows the drift while the fix and its
        # verification (up to verify_timeout) are in flight, and a drift fixed within one pass
        # still appears as opened and then resolved (with the action that fixed it). Both writes
        # carry the same `now`, so nothing is counted twice. A failed write does not hold the fix.
        first = await _record(svc, target, rep, rep.drifts, [], now, pass_id)
    if dry_run:
        rep.outcomes = [StepOutcome(s, ActionOutcome.PLANNED, "dry run") for s in rep.plan.steps]
    elif rep.plan.steps:
        rep.outcomes = await execute(svc, target, rep.plan)
        rep.remaining, rep.outcomes = await verify(svc, target, rep.outcomes, obs)
    rep.status = TargetStatus.DRIFT if rep.remaining else TargetStatus.OK
    if record:
        change = await _record(svc, target, rep, rep.remaining, _actions(rep), now, pass_id)
        if change is not None:
            rep.ledger = {
                "opened": len((first or change).opened),
                "persisting": len(change.persisting),
                "resolved": len(change.resolved),
            }
    if any(stage == "ledger" for stage, _ in rep.errors):
        rep.status = TargetStatus.ERROR


async def _record(
    svc: Services,
    target: Target,
    rep: TargetReport,
    drifts: Sequence[Drift],
    actions: Sequence[ActionRecord],
    now: datetime,
    pass_id: str,
) -> LedgerChange | None:
    """One ledger write of the target's drift; a failure is the report's error, not the pass's end."""
    assert svc.ledger is not None
    try:
        return await svc.ledger.record_target(
            target.name, drifts, actions, now, blind=is_blind(drifts), pass_id=pass_id, changed_by=rep.changed_by
        )
    except ReconcilerError as exc:
        rep.errors.append(("ledger", str(exc)))
        return None


async def observe(svc: Services, target: Target) -> Observation:
    """ARM and the NVA agents, concurrently; every failure is Unknown, never absent."""
    agent_names = [p for p in target.peers if p.agent_url]
    view_tasks = [asyncio.create_task(_agent_view(svc, target, p)) for p in agent_names]
    arm_obs = await svc.arm.observe(target)
    views = [await t for t in view_tasks]
    return replace(arm_obs, agents={p.name: v for p, v in zip(agent_names, views, strict=True)})


async def _agent_view(svc: Services, target: Target, peer: Peer) -> AgentView | Unknown:
    agent = svc.agents.for_peer(target, peer)
    if isinstance(agent, str):
        return Unknown("agent.state", peer.name, agent)
    try:
        return await agent.view()
    except ReconcilerError as exc:
        return Unknown("agent.state", peer.name, str(exc)[:200])


def known_from(target: Target, obs: Observation) -> Known:
    ips = obs.hub.ips if isinstance(obs.hub, Hub) and obs.hub.ips else None
    hub_ready: bool | None
    if isinstance(obs.hub, Hub):
        hub_ready = obs.hub.provisioning_state == "Succeeded" and obs.hub.routing_state == "Provisioned"
    else:
        hub_ready = None if isinstance(obs.hub, Unknown) else False  # None here: the hub is gone
    connection_of = matched_connections(target, obs)
    routes_unknown = frozenset(
        peer for peer, conn in connection_of.items() if isinstance(obs.learned.get(conn), Unknown)
    )
    fw = obs.firewall
    healthy: bool | None
    if isinstance(fw, Firewall):
        # FirewallHealth Unhealthy means it cannot forward; Degraded (SNAT ports exhausted) still
        # forwards, so it is drift to alert on but not a reason to hold or withdraw the route.
        metric = obs.firewall_health
        unhealthy = isinstance(metric, FirewallHealth) and metric.status == HealthStatus.UNHEALTHY
        healthy = fw.provisioning_state == "Succeeded" and fw.private_ip is not None and not unhealthy
    elif isinstance(fw, Unknown):
        healthy = None
    else:
        # None: either no firewall resource is declared (fixed IP) or it is gone.
        healthy = obs.firewall_ip is not None
    return Known(
        ars_ips=ips,
        firewall_ip=obs.firewall_ip,
        firewall_healthy=healthy,
        hub_ready=hub_ready,
        routes_unknown=routes_unknown,
    )


async def execute(svc: Services, target: Target, p: Plan) -> list[StepOutcome]:
    """Run exactly the plan's steps, in order. A failed step is an outcome, not an exception."""
    outcomes: list[StepOutcome] = []
    for step in p.steps:
        try:
            detail = await _run_step(svc, target, step)
            outcomes.append(StepOutcome(step, ActionOutcome.APPLIED, detail))
        except TransientError as exc:
            # e.g. 409 AnotherOperationInProgress or an agent 503: try again next pass, not "failed".
            outcomes.append(StepOutcome(step, ActionOutcome.DEFERRED, str(exc)[:300]))
        except (PermanentError, ConfigurationError) as exc:
            outcomes.append(StepOutcome(step, ActionOutcome.FAILED, str(exc)[:300]))
    return outcomes


async def _run_step(svc: Services, target: Target, step: Step) -> str:
    if step.kind in (StepKind.AGENT_INTENT, StepKind.AGENT_WITHDRAW):
        peer = next(p for p in target.peers if p.name == step.subject)
        agent = svc.agents.for_peer(target, peer)
        if isinstance(agent, str):
            raise PermanentError(agent)
        assert step.intent is not None
        return await agent.apply(step.intent)
    if step.kind == StepKind.PUT_CONNECTION:
        assert step.connection is not None
        name, ip, asn = step.connection
        await svc.arm.put_connection(target, name, ip, asn)
        return f"bgpConnection {name} written"
    if step.kind == StepKind.ENABLE_BRANCH_TO_BRANCH:
        await svc.arm.enable_branch_to_branch(target)
        return "branch-to-branch enabled"
    raise PermanentError(f"unknown step kind {step.kind}")


async def verify(
    svc: Services, target: Target, outcomes: list[StepOutcome], before: Observation
) -> tuple[list[Drift], list[StepOutcome]]:
    """Re-observe (bounded wait) until the applied steps' drifts are gone; mark each step fixed or not."""
    applied = [o for o in outcomes if o.outcome is ActionOutcome.APPLIED]
    drifts = diff(target, before)
    if not applied:
        return drifts, outcomes
    deadline = time.monotonic() + svc.verify_timeout
    while True:
        drifts = diff(target, await observe(svc, target))
        present = {d.identity for d in drifts}
        blind = is_blind(drifts)
        done = not blind and all(not (set(o.step.fixes) & present) for o in applied)
        if done or time.monotonic() >= deadline:
            break
        await asyncio.sleep(svc.verify_interval)
    final: list[StepOutcome] = []
    for o in outcomes:
        if o.outcome is not ActionOutcome.APPLIED:
            final.append(o)
        elif blind:
            final.append(StepOutcome(o.step, ActionOutcome.NOT_CONFIRMED, f"{o.detail}; re-observation failed"))
        elif set(o.step.fixes) & present:
            left = sorted(set(o.step.fixes) & present)
            detail = f"{o.detail}; still present: {', '.join(left)}"
            final.append(StepOutcome(o.step, ActionOutcome.NOT_CONFIRMED, detail))
        else:
            final.append(StepOutcome(o.step, ActionOutcome.FIXED, o.detail))
    return drifts, final


def _actions(rep: TargetReport) -> list[ActionRecord]:
    out = [ActionRecord(i, o.step.describe(), o.outcome, o.detail) for o in rep.outcomes for i in o.step.fixes]
    if rep.plan is not None:
        out.extend(ActionRecord(s.identity, "none", ActionOutcome.SKIPPED, s.reason) for s in rep.plan.skipped)
    return out


async def _record_pass(svc: Services, report: PassReport) -> None:
    """Log the pass record, then write it with any this worker could not write before.

    The log event (App Insights keeps it) survives a worker that dies before storage is back;
    the in-memory backlog makes the ledger whole again once storage answers.
    """
    errors = tuple(f"{s}: {m}" for s, m in report.errors) + tuple(
        f"{t.target}/{s}: {m}" for t in report.targets for s, m in t.errors
    )
    record = PassRecord(
        pass_id=report.pass_id,
        trigger=report.trigger,
        started_at=report.started_at,
        duration_s=report.duration_s,
        targets=tuple(t.target for t in report.targets),
        counts=report.counts(),
        errors=errors,
        dry_run=report.dry_run,
    )
    log.info(
        "pass record %s: %s, %d target(s), %d error(s)",
        record.pass_id, record.trigger, len(record.targets), len(record.errors),
        extra=record.log_fields(),
    )
    if svc.ledger is None:
        return
    if len(svc.unwritten) == svc.unwritten.maxlen:
        dropped = svc.unwritten[0]
        log.warning("pass record %s dropped: %d unwritten already", dropped.pass_id, len(svc.unwritten))
    # Take the backlog as this pass's own (passes of one worker run concurrently on one loop:
    # taking it in one synchronous step means no record is written twice or dropped).
    todo = [*svc.unwritten, record]
    svc.unwritten.clear()
    for i, rec in enumerate(todo):
        try:
            await svc.ledger.record_pass(rec)
        except TransientError as exc:
            svc.unwritten.extendleft(reversed(todo[i:]))
            behind = len(svc.unwritten)
            report.errors.append(("ledger", f"pass record not written ({behind} kept for the next pass): {exc}"))
            return


async def trace_targets(
    svc: Services, state: DesiredState, *, only: str | None = None, prefix: str | None = None
) -> list[Trace]:
    """Observe each target (read-only: no lease, no ledger, no fix) and trace its paths (reconciler.trace)."""
    if only is not None and only not in {t.name for t in state.targets}:
        raise ConfigurationError(f"unknown target {only!r}; known: {', '.join(t.name for t in state.targets)}")
    if prefix is not None:
        try:
            IPv4Network(prefix, strict=False)
        except ValueError as exc:
            raise ConfigurationError(f"prefix {prefix!r} is not an IPv4 prefix like 0.0.0.0/0") from exc
    targets = [t for t in state.targets if only is None or t.name == only]
    observations = await asyncio.gather(*(observe(svc, t) for t in targets))
    return [tr for t, obs in zip(targets, observations, strict=True) for tr in trace(t, obs, prefix)]
