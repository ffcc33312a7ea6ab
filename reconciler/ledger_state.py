"""The drift ledger's state machine: what one pass does to the drift records of one target.

Owns the record values (`DriftRecord`, `ActionRecord`, `LedgerChange`, `PassRecord`) and the pure
`transition`. Must not know storage, keys, ETags or the clock: time comes in as an argument.

Transitions, per drift identity (target|code|subject):

    known record   seen this pass   pass blind?   result
    ------------   --------------   -----------   -----------------------------------------------
    none           yes              any           opened      (first_seen=now, occurrences=1)
    resolved       yes              any           opened      (re-open: new incident, occurrences go on)
    open           yes              any           persisting  (occurrences+1, last_seen=now, values updated)
    open           no               no            resolved    (resolved_at=now, duration=now-first_seen)
    open           no               yes           kept        (unknown is not absent: stays open, untouched)
    resolved       no               any           (no change)

`transition` is idempotent for one `now`: applied again to its own output it returns the same change.
The ledger relies on that to re-apply a pass after an ETag conflict or a half-written batch set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from reconciler.attribution import Attribution
from reconciler.drift import Drift, is_blind
from reconciler.outcome import ActionOutcome
from reconciler.trigger import Trigger


class DriftStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class ActionRecord:
    """What the pass did (or would do) about one drift identity."""

    identity: str
    action: str
    outcome: ActionOutcome
    detail: str = ""

    def __post_init__(self) -> None:
        # Typed, and checked at run time too: a record is written to storage and read back by
        # people, so a value outside the closed set (or a step not yet verified) is refused here.
        if self.outcome not in set(ActionOutcome) or not ActionOutcome(self.outcome).final:
            known = ", ".join(o.value for o in ActionOutcome if o.final)
            raise ValueError(f"unknown action outcome {self.outcome!r}; one of {known}")
        object.__setattr__(self, "outcome", ActionOutcome(self.outcome))


@dataclass(frozen=True)
class DriftRecord:
    """The ledger's current state for one drift identity.

    `code` and `severity` are plain strings on purpose: stored records outlive catalogue edits.
    """

    identity: str
    target: str
    code: str
    subject: str
    severity: str
    status: DriftStatus
    first_seen: datetime  # of the current incident; a re-open moves it
    last_seen: datetime
    resolved_at: datetime | None
    occurrences: int  # passes that saw this identity, over all its incidents
    message: str
    expected: str
    observed: str
    last_action: str = ""
    last_outcome: str = ""
    changed_by: Attribution | None = None  # who made the change that opened this incident, if known

    @property
    def duration(self) -> timedelta | None:
        """How long the incident lasted; None while it is open."""
        return None if self.resolved_at is None else self.resolved_at - self.first_seen


@dataclass(frozen=True)
class LedgerChange:
    """What one pass did to one target's records (each record as it is *after* the pass)."""

    opened: tuple[DriftRecord, ...] = ()
    persisting: tuple[DriftRecord, ...] = ()
    resolved: tuple[DriftRecord, ...] = ()
    # Open drifts this pass could not see because it was blind: left open, not resolved.
    kept: tuple[DriftRecord, ...] = ()

    @property
    def records(self) -> tuple[DriftRecord, ...]:
        return self.opened + self.persisting + self.resolved + self.kept


@dataclass(frozen=True)
class PassRecord:
    """One reconcile pass, as the history shows it."""

    pass_id: str
    trigger: Trigger
    started_at: datetime
    duration_s: float
    targets: tuple[str, ...]
    counts: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    dry_run: bool = False

    def log_fields(self) -> dict[str, str | int | float | bool | tuple[str, ...]]:
        """The record as flat log attributes (App Insights customDimensions take no nesting)."""
        return {
            "event": "ars.pass",
            "pass_id": self.pass_id,
            "trigger": self.trigger.value,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "targets": self.targets,
            "errors": self.errors,
            "dry_run": self.dry_run,
            **{f"count_{k}": v for k, v in sorted(self.counts.items())},
        }


def _refreshed(record: DriftRecord, d: Drift) -> DriftRecord:
    return replace(
        record, code=d.code.value, severity=d.severity.value, subject=d.subject,
        message=d.message, expected=d.expected, observed=d.observed,
    )


def _with_action(record: DriftRecord, action: ActionRecord | None) -> DriftRecord:
    if action is None:
        return record
    return replace(record, last_action=action.action, last_outcome=action.outcome.value)


def transition(
    target: str,
    known: Sequence[DriftRecord],
    drifts: Sequence[Drift],
    actions: Sequence[ActionRecord],
    now: datetime,
    *,
    blind: bool,
    changed_by: Attribution | None = None,
) -> LedgerChange:
    """The change one pass makes to `target`'s records.

    `known` are the target's stored records (open and resolved). `drifts` are what the pass found
    for this target; a duplicated identity counts once. `blind` is or-ed with the evidence in
    `drifts` (any OBSERVATION_FAILED). `actions` annotate the record of their identity; an action
    for an identity with no record here is ignored (the ledger still writes it to history).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    strangers = sorted({d.target for d in drifts if d.target != target})
    if strangers:
        raise ValueError(f"drifts for {strangers} passed to the ledger of target {target!r}")
    blind = blind or is_blind(drifts)

    by_identity = {r.identity: r for r in known}
    action_for = {a.identity: a for a in actions}  # the last action for an identity wins
    seen: dict[str, Drift] = {}
    for d in drifts:
        seen.setdefault(d.identity, d)

    opened: list[DriftRecord] = []
    persisting: list[DriftRecord] = []
    for identity, d in seen.items():
        old = by_identity.get(identity)
        if old is not None and old.status is DriftStatus.OPEN:
            rec = _refreshed(old, d)
            if old.last_seen < now:
                rec = replace(rec, last_seen=now, occurrences=old.occurrences + 1)
            # else: already counted at this `now` (a re-applied pass), or a worker whose clock
            # runs behind the last writer's: last_seen never moves backwards.
            rec = _with_action(rec, action_for.get(identity))
            if rec.changed_by is None and changed_by is not None:
                rec = replace(rec, changed_by=changed_by)  # opened by a pass that did not know who
            (opened if rec.first_seen == now else persisting).append(rec)
        else:
            # New identity, or a resolved one back again: a new incident. The old incident's
            # action is not this one's, so last_action starts empty; occurrences keep counting.
            rec = DriftRecord(
                identity=identity, target=target, code=d.code.value, subject=d.subject,
                severity=d.severity.value, status=DriftStatus.OPEN,
                first_seen=now, last_seen=now, resolved_at=None,
                occurrences=(old.occurrences if old is not None else 0) + 1,
                message=d.message, expected=d.expected, observed=d.observed, changed_by=changed_by,
            )
            opened.append(_with_action(rec, action_for.get(identity)))

    resolved: list[DriftRecord] = []
    kept: list[DriftRecord] = []
    for identity, old in by_identity.items():
        if identity in seen:
            continue
        if old.status is DriftStatus.OPEN:
            if blind:
                kept.append(_with_action(old, action_for.get(identity)))
            else:
                rec = replace(old, status=DriftStatus.RESOLVED, resolved_at=now)
                resolved.append(_with_action(rec, action_for.get(identity)))
        elif old.resolved_at == now:
            resolved.append(_with_action(old, action_for.get(identity)))  # resolved at this `now` already

    key = _order
    return LedgerChange(
        opened=tuple(sorted(opened, key=key)),
        persisting=tuple(sorted(persisting, key=key)),
        resolved=tuple(sorted(resolved, key=key)),
        kept=tuple(sorted(kept, key=key)),
    )


def _order(record: DriftRecord) -> str:
    return record.identity


def apply(known: Sequence[DriftRecord], change: LedgerChange) -> list[DriftRecord]:
    """The target's records after `change` (what the ledger stores), sorted by identity."""
    merged = {r.identity: r for r in known}
    merged.update({r.identity: r for r in change.records})
    return [merged[k] for k in sorted(merged)]
