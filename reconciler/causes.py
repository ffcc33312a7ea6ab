"""Which drift explains which: the one cause table.

Owns `CAUSES`, the one test of it (`CauseRule.explains`) and the chain it makes (`explained_by`,
`root_cause`). Three answers use them: inhibition (alerts: a consequence does not page on its own
while its cause is active), grouping (incident: a cause and its consequences are one card) and the
status page's "cause" column. Pure; must not know how drift is found, alerted or shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from reconciler.drift import DriftCode, subject_part


class Fact(Protocol):
    """What a rule looks at: an alert state, a notification or an open drift (code, target, subject)."""

    @property
    def identity(self) -> str: ...
    @property
    def code(self) -> DriftCode: ...
    @property
    def target(self) -> str: ...
    @property
    def subject(self) -> str: ...


@dataclass(frozen=True)
class CauseRule:
    """A drift with code `cause` explains drifts with a code in `consequences` on the same target,
    when every subject part named in `equal` is present in both and the same."""

    cause: DriftCode
    consequences: frozenset[DriftCode]
    equal: tuple[str, ...] = ()

    def explains(self, cause: Fact, other: Fact) -> bool:
        """Whether `cause` explains `other` under this rule (the one test inhibition and grouping use)."""
        if cause.code != self.cause or other.code not in self.consequences or cause.target != other.target:
            return False
        return all(
            (mine := subject_part(cause.subject, key)) is not None and mine == subject_part(other.subject, key)
            for key in self.equal
        )


_GATEWAY = frozenset({DriftCode.GATEWAY_NOT_LEARNING, DriftCode.GATEWAY_NOT_ADVERTISING})
_ROUTES = frozenset({DriftCode.ROUTE_MISSING, DriftCode.ROUTE_NEXT_HOP_WRONG, DriftCode.ROUTE_REJECTED_LOOP})
# A probe NIC's real route follows what Route Server programs (reconciler.trace puts it downstream).
_NIC = frozenset({DriftCode.NIC_ROUTE_WRONG})

# Earlier rules win when two causes could explain the same drift: the deeper cause first.
CAUSES: tuple[CauseRule, ...] = (
    # The hub itself is broken: everything downstream follows. Blindness is about the reconciler.
    CauseRule(
        DriftCode.ROUTE_SERVER_UNHEALTHY,
        frozenset(DriftCode) - {DriftCode.ROUTE_SERVER_UNHEALTHY, DriftCode.OBSERVATION_FAILED},
    ),
    # No firewall IP: the next hop and what the gateway carries are wrong by consequence.
    CauseRule(
        DriftCode.FIREWALL_UNHEALTHY, _GATEWAY | _NIC | {DriftCode.ROUTE_NEXT_HOP_WRONG, DriftCode.ROUTE_MISSING}
    ),
    # Branch-to-branch off: the gateway stops learning (and so advertising) what the NVA sends.
    CauseRule(DriftCode.BRANCH_TO_BRANCH_DISABLED, _GATEWAY),
    # No usable bgpConnection: its sessions are down and its routes are missing.
    *(
        CauseRule(code, frozenset({DriftCode.PEER_DOWN}) | _ROUTES, equal=("peer",))
        for code in (DriftCode.PEER_MISSING, DriftCode.PEER_MISMATCH, DriftCode.PEER_FAILED)
    ),
    # A session down on one instance: that instance learned nothing from the peer.
    CauseRule(DriftCode.PEER_DOWN, _ROUTES, equal=("peer", "instance")),
    # The route reaches Route Server wrong or not at all (a firewall IP change, a route-map edit):
    # the gateway then lacks it and does not advertise it on-premises.
    CauseRule(DriftCode.ROUTE_NEXT_HOP_WRONG, _GATEWAY | _NIC, equal=("prefix",)),
    CauseRule(DriftCode.ROUTE_MISSING, _GATEWAY | _NIC, equal=("prefix",)),
    CauseRule(
        DriftCode.GATEWAY_NOT_LEARNING, frozenset({DriftCode.GATEWAY_NOT_ADVERTISING}), equal=("gateway", "prefix")
    ),
)


F = TypeVar("F", bound=Fact)


def explained_by(fact: F, facts: Iterable[F], rules: Sequence[CauseRule] = CAUSES) -> F | None:
    """The fact among `facts` that explains `fact`, or None; earlier rules first (the deeper cause)."""
    others = [c for c in facts if c.identity != fact.identity]
    return next((c for rule in rules for c in others if rule.explains(c, fact)), None)


def root_cause(fact: F, facts: Sequence[F], rules: Sequence[CauseRule] = CAUSES) -> F:
    """Up the chain of `explained_by` to the fact nothing among `facts` explains (`fact` itself when
    nothing does). A chain that would come back to a fact already on it stops there."""
    seen = {fact.identity}
    while (up := explained_by(fact, facts, rules)) is not None and up.identity not in seen:
        fact = up
        seen.add(up.identity)
    return fact
