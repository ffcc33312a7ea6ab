"""Incidents: the notifications of one target and pass grouped by cause, so one cause is one card.

Owns the grouping (the cause table itself is `reconciler.causes`, shared with inhibition). Pure: notifications in,
incidents out; must not know how alerts are decided, stored or rendered. The ledger and the alert
states still keep every drift on its own: grouping is only how the channel hears about them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.alerts import Kind, Notification
from reconciler.causes import CAUSES, CauseRule, root_cause
from reconciler.drift import DriftCode, Severity, subject_part

# Drifts of one code that are one cause seen several times (e.g. on both Route Server instances),
# keyed by the subject parts they share.
SAME_CAUSE: dict[DriftCode, tuple[str, ...]] = {
    DriftCode.PEER_DOWN: ("peer",),
    DriftCode.ROUTE_MISSING: ("peer", "prefix"),
    DriftCode.ROUTE_NEXT_HOP_WRONG: ("peer", "prefix"),
    DriftCode.ROUTE_REJECTED_LOOP: ("peer", "prefix"),
    DriftCode.ROUTE_UNEXPECTED: ("peer", "prefix"),
    DriftCode.GATEWAY_NOT_LEARNING: ("prefix",),
    DriftCode.GATEWAY_NOT_ADVERTISING: ("gateway", "prefix"),
    DriftCode.NIC_ROUTE_WRONG: ("prefix",),
}

_SEVERITY_ORDER = (Severity.CRITICAL, Severity.WARNING, Severity.INFO)


@dataclass(frozen=True)
class Incident:
    """One cause (one or more drifts of the same code) and the drifts it explains, of one kind."""

    kind: Kind
    target: str
    causes: tuple[Notification, ...]
    consequences: tuple[Notification, ...] = ()

    @property
    def code(self) -> DriftCode:
        return self.causes[0].code

    @property
    def severity(self) -> Severity:
        """The incident's: the worst of its cause and consequences."""
        return min((n.severity for n in self.members), key=_SEVERITY_ORDER.index)

    @property
    def members(self) -> tuple[Notification, ...]:
        return self.causes + self.consequences

    @property
    def key(self) -> str:
        """Stable within a pass: the first cause's identity and the kind, hashed."""
        return hashlib.sha256(f"{self.kind.value}\n{self.causes[0].identity}".encode()).hexdigest()[:16]


def group(notes: Sequence[Notification], rules: Sequence[CauseRule] = CAUSES) -> list[Incident]:
    """Incidents of `notes`, most severe first; every notification is in exactly one incident."""
    by_part: dict[tuple[str, Kind], list[Notification]] = {}
    for n in sorted(notes, key=lambda n: n.identity):
        by_part.setdefault((n.target, n.kind), []).append(n)
    incidents: list[Incident] = []
    for (target, kind), mine in sorted(by_part.items()):
        incidents += _group_one(target, kind, mine, rules)
    return sorted(incidents, key=lambda i: (_SEVERITY_ORDER.index(i.severity), i.target, i.code.value, i.key))


def _group_one(target: str, kind: Kind, notes: list[Notification], rules: Sequence[CauseRule]) -> list[Incident]:
    groups: dict[tuple[str, ...], tuple[list[Notification], list[Notification]]] = {}
    for n in notes:
        r = root_cause(n, notes, rules)
        same = SAME_CAUSE.get(r.code)
        gid = (r.code.value, *(subject_part(r.subject, k) or "" for k in same)) if same else (r.identity,)
        causes, consequences = groups.setdefault(gid, ([], []))
        (causes if n.identity == r.identity else consequences).append(n)
    return [Incident(kind, target, tuple(c), tuple(q)) for c, q in groups.values()]
