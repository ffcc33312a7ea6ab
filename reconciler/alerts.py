"""The alert state machine: drift observations in, alert states and notifications out (DESIGN §8).

Owns the life of one alert per drift identity (pending → firing → resolved, reminders, flapping,
inhibition, "reconciler blind"). Pure: no clock, no I/O, no logging; must not know how alerts are
stored, rendered or delivered.

One pass is two steps, kept apart on purpose:
1. *observe*: presence of each identity → status (pending / firing / flapping / inactive);
2. *announce*: status, what the channel last heard, and inhibition → which notification (table `_ANNOUNCE`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from reconciler.causes import CAUSES, CauseRule, explained_by
from reconciler.drift import Drift, DriftCode, Severity, failed_reads

BLIND_SUBJECT = "reconciler=blind"
"""Subject of the per-target "reconciler blind" alert (code OBSERVATION_FAILED)."""

_ROUTE_CODES = frozenset(
    {
        DriftCode.ROUTE_MISSING,
        DriftCode.ROUTE_NEXT_HOP_WRONG,
        DriftCode.ROUTE_REJECTED_LOOP,
        DriftCode.ROUTE_UNEXPECTED,
        DriftCode.ROUTE_LIMIT_RISK,
    }
)


class Status(StrEnum):
    PENDING = "pending"  # observed, hold-down running, nobody told yet
    FIRING = "firing"  # observed for at least the hold-down
    FLAPPING = "flapping"  # too many presence changes in the flap window; quiet until stable
    INACTIVE = "inactive"  # not observed; kept only while its flap history matters


class Kind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    REMINDER = "reminder"
    FLAPPING = "flapping"
    BLIND = "blind"
    UNBLIND = "unblind"


class Announced(StrEnum):
    """What the channel last heard about the current episode (so its end is always announced)."""

    NONE = "none"
    FIRING = "firing"
    FLAPPING = "flapping"


# Inhibition follows the one cause table (reconciler.causes): while a cause is active, what it
# explains does not page on its own. The blind alert (OBSERVATION_FAILED) is about the reconciler,
# not the network, so nothing mutes it.
DEFAULT_INHIBIT: tuple[CauseRule, ...] = CAUSES

# BGP hold time on Route Server is 180 s: a session or route that comes back within it is a blip.
BGP_HOLD_TIME = timedelta(seconds=180)


def _default_hold_downs() -> dict[DriftCode, timedelta]:
    return {code: BGP_HOLD_TIME for code in (DriftCode.PEER_DOWN, *_ROUTE_CODES)}


@dataclass(frozen=True)
class AlertRules:
    """Alerting settings. Every duration is a `timedelta`; all have production defaults."""

    hold_down: Mapping[DriftCode, timedelta] = field(default_factory=_default_hold_downs)
    """Per-code `for`: how long a drift must be observed before it fires. PEER_DOWN and ROUTE_*
    default to the 180 s BGP hold time, so a session blip does not page."""

    default_hold_down: timedelta = timedelta(0)
    """`for` of codes not in `hold_down`. Zero: Azure-side drift (a failed peer, an unhealthy
    firewall) does not heal itself within seconds, so it fires on the first pass that sees it."""

    blind_for: timedelta = timedelta(seconds=180)
    """How long a target must stay blind before "reconciler blind" fires: one failed read
    (throttling, a restarting agent) is routine."""

    repeat_interval: timedelta = timedelta(hours=4)
    """Reminder period for alerts still firing (Alertmanager's default)."""

    flap_transitions: int = 6
    """Presence changes (appear or disappear) within `flap_window` that make an alert flapping."""

    flap_window: timedelta = timedelta(hours=1)
    """Sliding window in which presence changes are counted."""

    flap_quiet: timedelta = timedelta(minutes=30)
    """A flapping alert is stable again after this long without a presence change; it then
    fires (if present, and also past its hold-down) or resolves."""

    inhibit: tuple[CauseRule, ...] = DEFAULT_INHIBIT
    """Inhibition rules; see `DEFAULT_INHIBIT`."""

    def __post_init__(self) -> None:
        if self.flap_transitions < 2:
            raise ValueError("flap_transitions must be at least 2 (one appearance and one disappearance)")
        if self.repeat_interval <= timedelta(0):
            raise ValueError("repeat_interval must be positive")

    def hold_down_for(self, code: DriftCode) -> timedelta:
        if code == DriftCode.OBSERVATION_FAILED:
            return self.blind_for
        return self.hold_down.get(code, self.default_hold_down)


@dataclass(frozen=True)
class AlertState:
    """Everything the machine remembers about one identity between passes (serializable)."""

    identity: str
    target: str
    code: DriftCode
    subject: str
    status: Status
    present: bool  # as of the last pass that could see it
    first_seen: datetime  # start of the current episode
    last_seen: datetime
    message: str = ""
    expected: str = ""
    observed: str = ""
    announced: Announced = Announced.NONE
    last_notified: datetime | None = None  # last firing/reminder/flapping sent, for reminders
    transitions: tuple[datetime, ...] = ()  # presence changes within the flap window

    @property
    def severity(self) -> Severity:
        return Drift(self.target, self.code, self.subject, "").severity

    @property
    def is_blind_alert(self) -> bool:
        return self.code == DriftCode.OBSERVATION_FAILED and self.subject == BLIND_SUBJECT

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "target": self.target,
            "code": self.code.value,
            "subject": self.subject,
            "status": self.status.value,
            "present": self.present,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "message": self.message,
            "expected": self.expected,
            "observed": self.observed,
            "announced": self.announced.value,
            "last_notified": self.last_notified.isoformat() if self.last_notified else None,
            "transitions": [t.isoformat() for t in self.transitions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertState:
        last_notified = data.get("last_notified")
        return cls(
            identity=str(data["identity"]),
            target=str(data["target"]),
            code=DriftCode(data["code"]),
            subject=str(data["subject"]),
            status=Status(data["status"]),
            present=bool(data["present"]),
            first_seen=datetime.fromisoformat(data["first_seen"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
            message=str(data.get("message", "")),
            expected=str(data.get("expected", "")),
            observed=str(data.get("observed", "")),
            announced=Announced(data.get("announced", Announced.NONE.value)),
            last_notified=datetime.fromisoformat(last_notified) if last_notified else None,
            transitions=tuple(datetime.fromisoformat(t) for t in data.get("transitions", ())),
        )


@dataclass(frozen=True)
class Notification:
    """One thing the channel should hear. `duration_s` is set for resolved/unblind (how long it
    lasted) and reminders (how long so far); `action`/`outcome` say what the reconciler did."""

    kind: Kind
    target: str
    identity: str
    code: DriftCode
    subject: str
    severity: Severity
    message: str
    expected: str
    observed: str
    first_seen: datetime
    duration_s: float | None = None
    action: str | None = None
    outcome: str | None = None
    why_not: str | None = None  # the planner's reason for leaving it alone (policy, budget, window, …)
    at: datetime | None = None  # the pass that decided it (resolved-at for a resolution)
    folded: bool = False  # muted by inhibition: shown under its cause's card only, never on its own
    changed_by: str = ""  # who made the change, when known (reconciler.attribution)


# (what the channel heard, status after observing, muted) → (what to say, what it has heard now).
# A reminder is decided separately (it depends on time since the last notification). Resolutions
# are announced even when muted: inhibition stops new noise, it must not leave a card dangling.
_ANNOUNCE: dict[tuple[Announced, Status, bool], tuple[Kind | None, Announced]] = {
    (Announced.NONE, Status.PENDING, False): (None, Announced.NONE),
    (Announced.NONE, Status.PENDING, True): (None, Announced.NONE),
    (Announced.NONE, Status.FIRING, False): (Kind.FIRING, Announced.FIRING),
    (Announced.NONE, Status.FIRING, True): (None, Announced.NONE),
    (Announced.NONE, Status.FLAPPING, False): (Kind.FLAPPING, Announced.FLAPPING),
    (Announced.NONE, Status.FLAPPING, True): (None, Announced.NONE),
    (Announced.NONE, Status.INACTIVE, False): (None, Announced.NONE),  # a blip below the hold-down
    (Announced.NONE, Status.INACTIVE, True): (None, Announced.NONE),
    (Announced.FIRING, Status.PENDING, False): (None, Announced.FIRING),  # unreachable; keep quiet
    (Announced.FIRING, Status.PENDING, True): (None, Announced.FIRING),
    (Announced.FIRING, Status.FIRING, False): (None, Announced.FIRING),
    (Announced.FIRING, Status.FIRING, True): (None, Announced.FIRING),
    (Announced.FIRING, Status.FLAPPING, False): (Kind.FLAPPING, Announced.FLAPPING),
    (Announced.FIRING, Status.FLAPPING, True): (None, Announced.FIRING),
    (Announced.FIRING, Status.INACTIVE, False): (Kind.RESOLVED, Announced.NONE),
    (Announced.FIRING, Status.INACTIVE, True): (Kind.RESOLVED, Announced.NONE),
    (Announced.FLAPPING, Status.PENDING, False): (None, Announced.FLAPPING),  # unreachable
    (Announced.FLAPPING, Status.PENDING, True): (None, Announced.FLAPPING),
    (Announced.FLAPPING, Status.FIRING, False): (Kind.FIRING, Announced.FIRING),  # stable, still there
    (Announced.FLAPPING, Status.FIRING, True): (None, Announced.FLAPPING),
    (Announced.FLAPPING, Status.FLAPPING, False): (None, Announced.FLAPPING),  # quiet until stable
    (Announced.FLAPPING, Status.FLAPPING, True): (None, Announced.FLAPPING),
    (Announced.FLAPPING, Status.INACTIVE, False): (Kind.RESOLVED, Announced.NONE),  # stable, gone
    (Announced.FLAPPING, Status.INACTIVE, True): (Kind.RESOLVED, Announced.NONE),
}

# The blind alert speaks its own words.
_BLIND_KIND = {Kind.FIRING: Kind.BLIND, Kind.RESOLVED: Kind.UNBLIND}

_ACTIVE = frozenset({Status.PENDING, Status.FIRING, Status.FLAPPING})

_KIND_ORDER = {k: i for i, k in enumerate(
    (Kind.BLIND, Kind.FIRING, Kind.FLAPPING, Kind.REMINDER, Kind.UNBLIND, Kind.RESOLVED)
)}


def blind_identity(target: str) -> str:
    return Drift(target, DriftCode.OBSERVATION_FAILED, BLIND_SUBJECT, "").identity


def evaluate(
    states: Mapping[str, AlertState],
    drifts: Sequence[Drift],
    blind: Mapping[str, str],
    targets: Collection[str],
    now: datetime,
    rules: AlertRules,
    actions: Mapping[str, tuple[str, str]] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> tuple[dict[str, AlertState], list[Notification]]:
    """One pass: the new states (all of them, other targets' untouched) and what to announce.

    `drifts` are everything observed this pass for `targets`; an identity of those targets with
    no drift is gone, unless the target is blind (in `blind`, target → reason, or has an
    OBSERVATION_FAILED drift): then its state is unknown and it neither resolves nor fires.
    `actions` maps identity → (what the reconciler did, outcome); `skipped` maps identity → why the
    planner left it alone.
    """
    actions = actions or {}
    skipped = skipped or {}
    scope = set(targets) | {d.target for d in drifts} | set(blind)
    new_states = {ident: st for ident, st in states.items() if st.target not in scope}
    notifications: list[Notification] = []

    for target in sorted(scope):
        mine = [d for d in drifts if d.target == target]
        observed = {d.identity: d for d in mine if d.code != DriftCode.OBSERVATION_FAILED}
        reasons = [blind[target]] if blind.get(target) else []
        reasons += [d.message or d.subject for d in failed_reads(mine)]
        if reasons:
            reason = "; ".join(dict.fromkeys(reasons))
            marker = Drift(target, DriftCode.OBSERVATION_FAILED, BLIND_SUBJECT, reason,
                           expected="every read succeeds", observed=reason)
            observed[marker.identity] = marker

        prior = {ident: st for ident, st in states.items() if st.target == target}
        stepped: dict[str, AlertState | None] = {}
        for ident in sorted(prior.keys() | observed.keys()):
            before = prior.get(ident)
            drift = observed.get(ident)
            if drift is None and reasons and before is not None and not before.is_blind_alert:
                stepped[ident] = before  # unknown while blind: absence is not evidence of health
            else:
                stepped[ident] = _observe(before, drift, now, rules)

        active = [st for st in stepped.values() if st is not None and st.status in _ACTIVE]
        for ident, after in stepped.items():
            before = prior.get(ident)
            if after is None or after is before:
                if after is not None:
                    new_states[ident] = after
                continue
            muted = explained_by(after, active, rules.inhibit) is not None
            final, note = _announce(before, after, muted, now, rules, actions.get(ident), skipped.get(ident))
            if note is None and muted:
                # What it would have said unmuted, for its cause's card to fold in; its state stays
                # unannounced, so it speaks for itself if it outlives its cause.
                _, unmuted = _announce(before, after, False, now, rules, actions.get(ident), skipped.get(ident))
                if unmuted is not None and unmuted.kind == Kind.FIRING:
                    note = replace(unmuted, folded=True)
            if note is not None:
                notifications.append(note)
            if final is not None:
                new_states[ident] = final

    notifications.sort(key=lambda n: (n.target, _KIND_ORDER[n.kind], n.identity))
    return new_states, notifications


def undelivered(
    states: Mapping[str, AlertState], announces: Mapping[str, Kind], now: datetime
) -> dict[str, AlertState]:
    """`states` after Teams refused for good the cards that said `announces` (identity → kind): an
    alert counts as announced only once a card about it was delivered, so the next pass says it
    again (a firing that never arrived fires again; a resolution that never arrived resolves again)."""
    out = dict(states)
    for ident, kind in announces.items():
        st = out.get(ident)
        if kind in (Kind.RESOLVED, Kind.UNBLIND):
            if st is None:
                target, code, subject = ident.split("|", 2)
                out[ident] = AlertState(ident, target, DriftCode(code), subject, Status.INACTIVE, False, now, now,
                                        announced=Announced.FIRING)
            elif not st.present and st.announced == Announced.NONE:
                out[ident] = replace(st, announced=Announced.FIRING)
        elif st is not None and st.announced != Announced.NONE:
            out[ident] = replace(st, announced=Announced.NONE, last_notified=None)
    return out


def _observe(
    before: AlertState | None, drift: Drift | None, now: datetime, rules: AlertRules
) -> AlertState | None:
    """Presence → status. Returns None when nothing is worth remembering (gone, quiet, announced end)."""
    seen = drift is not None
    was = before.present if before is not None else False
    horizon = now - rules.flap_window
    transitions = tuple(t for t in (before.transitions if before else ()) if t > horizon)
    if seen != was:
        transitions += (now,)

    if before is None:
        assert drift is not None  # an identity is stepped only if it has a state or a drift
        base = AlertState(
            identity=drift.identity, target=drift.target, code=drift.code, subject=drift.subject,
            status=Status.PENDING, present=True, first_seen=now, last_seen=now,
        )
    else:
        base = before
    if drift is not None:
        new_episode = base.status == Status.INACTIVE
        base = replace(
            base, message=drift.message, expected=drift.expected, observed=drift.observed, last_seen=now,
            first_seen=now if new_episode else base.first_seen,
        )

    hold = rules.hold_down_for(base.code)
    if base.status == Status.FLAPPING:
        last_change = transitions[-1] if transitions else base.last_seen
        quiet_for = now - last_change
        stable = quiet_for >= (max(rules.flap_quiet, hold) if seen else rules.flap_quiet)
        status = (Status.FIRING if seen else Status.INACTIVE) if stable else Status.FLAPPING
    elif len(transitions) >= rules.flap_transitions:
        status = Status.FLAPPING
        # The flapping episode began with the first change in the window, not the latest appearance.
        base = replace(base, first_seen=min(transitions[0], base.first_seen))
    elif seen:
        held = base.status == Status.FIRING or now - base.first_seen >= hold
        status = Status.FIRING if held else Status.PENDING
    else:
        status = Status.INACTIVE

    after = replace(base, status=status, present=seen, transitions=transitions)
    if status == Status.INACTIVE and not transitions and after.announced == Announced.NONE:
        return None
    return after


def _announce(
    before: AlertState | None,
    after: AlertState,
    muted: bool,
    now: datetime,
    rules: AlertRules,
    action: tuple[str, str] | None,
    why_not: str | None = None,
) -> tuple[AlertState | None, Notification | None]:
    heard = before.announced if before is not None else Announced.NONE
    kind, heard_now = _ANNOUNCE[(heard, after.status, muted)]
    if (
        kind is None
        and not muted
        and heard == Announced.FIRING
        and after.status == Status.FIRING
        and after.last_notified is not None
        and now - after.last_notified >= rules.repeat_interval
    ):
        kind = Kind.REMINDER

    final = replace(after, announced=heard_now)
    if kind in (Kind.FIRING, Kind.FLAPPING, Kind.REMINDER):
        final = replace(final, last_notified=now)
    elif kind == Kind.RESOLVED:
        final = replace(final, last_notified=None)
    if final.status == Status.INACTIVE and final.announced == Announced.NONE and not final.transitions:
        final_or_none: AlertState | None = None
    else:
        final_or_none = final
    if kind is None:
        return final_or_none, None

    if after.is_blind_alert:
        kind = _BLIND_KIND.get(kind, kind)
    lasting = kind in (Kind.RESOLVED, Kind.UNBLIND, Kind.REMINDER)
    duration = (now - after.first_seen).total_seconds() if lasting else None
    note = Notification(
        kind=kind, target=after.target, identity=after.identity, code=after.code, subject=after.subject,
        severity=after.severity, message=after.message, expected=after.expected, observed=after.observed,
        first_seen=after.first_seen, duration_s=duration,
        action=action[0] if action else None, outcome=action[1] if action else None,
        why_not=why_not, at=now,
    )
    return final_or_none, note
