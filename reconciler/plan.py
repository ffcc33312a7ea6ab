"""The pure planner: (target, drifts, what is known, now) -> the steps to run and what is left alone.

Owns the safety interlocks of DESIGN §6: nothing from unknown state, policy opt-ins, suspend,
maintenance windows, the action budget, the firewall-unhealthy policy. Must not do I/O, read a
clock or log; the executor runs exactly the steps of a `Plan`.

Every drift of the target ends in exactly one place: in the `fixes` of the step(s) meant to
remove it, or in `skipped` with one reason. Small sub-planners each return (steps, skips) for
the drifts they own; what none of them took is computed from the values at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from reconciler.causes import explained_by
from reconciler.desired import ARS_ASN, FirewallPolicy, Peer, Target
from reconciler.drift import Drift, DriftCode, Fixer, failed_reads


class StepKind(StrEnum):
    AGENT_INTENT = "agent_intent"  # push the desired BGP intent to one NVA
    AGENT_WITHDRAW = "agent_withdraw"  # stop originating the prefixes (firewall unhealthy + withdraw policy)
    PUT_CONNECTION = "put_connection"  # create or rewrite a bgpConnection (Azure write, opt-in)
    ENABLE_BRANCH_TO_BRANCH = "enable_branch_to_branch"  # Azure write, opt-in


@dataclass(frozen=True)
class Intent:
    """What one NVA must advertise, to whom, with which next hop: `prefixes=()` withdraws.

    The one intent value: the planner makes it and agent_client sends it (its wire shape is
    the adapter's business). `neighbors` are (ip, asn) pairs, one per Route Server instance.
    """

    local_asn: int
    neighbors: tuple[tuple[str, int], ...]
    prefixes: tuple[str, ...]
    next_hop: str | None


@dataclass(frozen=True)
class Step:
    target: str
    kind: StepKind
    subject: str  # peer name, or route server name
    fixes: tuple[str, ...]  # drift identities this step is meant to remove
    reason: str
    intent: Intent | None = None
    connection: tuple[str, str, int] | None = None  # (name, peer ip, peer asn)

    def describe(self) -> str:
        if self.intent is not None:
            pfx = ", ".join(self.intent.prefixes) or "nothing"
            return f"{self.kind.value} {self.subject}: originate {pfx} via {self.intent.next_hop}"
        if self.connection is not None:
            name, ip, asn = self.connection
            return f"{self.kind.value} {name}: peerIp {ip}, peerAsn {asn}"
        return f"{self.kind.value} {self.subject}"


@dataclass(frozen=True)
class Skip:
    identity: str
    reason: str


@dataclass(frozen=True)
class Known:
    """Facts the planner needs that come from the observation (None when unknown)."""

    ars_ips: tuple[str, ...] | None
    firewall_ip: str | None
    firewall_healthy: bool | None
    # Route Server hub Succeeded + routingState Provisioned. False also when the hub is absent.
    hub_ready: bool | None
    # Peers whose learned-routes read failed, by the connection the diff matched to each peer
    # (a connection may carry another name than its peer, e.g. `nva1-conn` for nva1).
    routes_unknown: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Plan:
    target: str
    steps: tuple[Step, ...] = ()
    skipped: tuple[Skip, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fixed(self) -> frozenset[str]:
        """Identities some step is meant to remove."""
        return frozenset(i for s in self.steps for i in s.fixes)


# Reads whose failure makes an NVA step unsafe: the intent is built from them.
_NVA_INPUTS = ("hub.get", "bgp.list", "firewall.get")
# Reads whose failure makes an Azure write unsafe: the write is built from them.
_AZURE_INPUTS = ("hub.get", "bgp.list")
# A peer's bgpConnection is not usable: the codes an Azure write (PUT_CONNECTION) fixes.
_CONNECTION = frozenset({DriftCode.PEER_MISSING, DriftCode.PEER_MISMATCH, DriftCode.PEER_FAILED})

Planned = tuple[list[Step], list[Skip]]


@dataclass(frozen=True)
class _Facts:
    """One target's planning inputs, gathered once for the sub-planners."""

    target: Target
    known: Known
    drifts: tuple[Drift, ...]  # this target's, one per identity
    failed: tuple[Drift, ...]  # the OBSERVATION_FAILED ones among them
    # Connection drifts (PEER_MISSING/MISMATCH/FAILED) no step of this plan writes: the NVA drifts
    # they explain cannot be fixed from the NVA (set once the Azure writes are planned).
    unwritten: tuple[Drift, ...] = ()

    @property
    def failed_reads(self) -> set[str]:
        return {d.part("read") or "" for d in self.failed}

    @property
    def withdraw(self) -> bool:
        policy = self.target.firewall.unhealthy_policy
        return self.known.firewall_healthy is False and policy == FirewallPolicy.WITHDRAW


def plan(target: Target, drifts: Sequence[Drift], known: Known, now: datetime) -> Plan:
    seen: dict[str, Drift] = {}
    for d in drifts:
        if d.target == target.name:
            seen.setdefault(d.identity, d)
    mine = tuple(seen.values())
    hold = _on_hold(target, now)
    if hold:
        return Plan(target.name, (), tuple(Skip(d.identity, hold) for d in mine), (hold,))
    facts = _Facts(target, known, mine, tuple(failed_reads(mine)))
    # Azure-side writes first: an NVA fix cannot land on a connection that does not exist.
    steps, skips = _azure_writes(facts)
    written = {i for s in steps for i in s.fixes}
    facts = replace(facts, unwritten=tuple(d for d in mine if d.code in _CONNECTION and d.identity not in written))
    nva_steps, nva_skips = _nva_fixes(facts)
    steps, skips = steps + nva_steps, skips + nva_skips
    steps, over = _within_budget(steps, target.policy.action_budget)
    fixed = {i for s in steps for i in s.fixes}
    skips = [s for s in skips if s.identity not in fixed] + [s for s in over if s.identity not in fixed]
    skips += _left_alone(facts, fixed | {s.identity for s in skips})
    return Plan(target.name, tuple(steps), tuple(_first_reason(skips)))


# ---- sub-planners: each owns some drifts and returns (steps, skips) for them --------------------


def _azure_writes(f: _Facts) -> Planned:
    """BRANCH_TO_BRANCH_DISABLED and PEER_MISSING/MISMATCH/FAILED: opt-in Azure writes."""
    target = f.target
    mine = [d for d in f.drifts if d.fixer == Fixer.AZURE_WRITE]
    blocked = None
    if not target.policy.azure_writes:
        blocked = "policy: Azure-side writes are off for this target (policy.azure_writes)"
    elif f.failed_reads & set(_AZURE_INPUTS):
        blocked = "state unknown: Route Server or its connections could not be read"
    elif f.known.hub_ready is not True:
        # ARM refuses (or collides with) writes to a hub that is updating, and there is nothing to
        # write into when it is gone: wait for Succeeded + Provisioned (DESIGN §11 rules 9 and 10).
        blocked = "Route Server not ready: Azure-side writes wait for Succeeded + Provisioned"
    if blocked:
        return [], [Skip(d.identity, blocked) for d in mine]
    steps: list[Step] = []
    skips: list[Skip] = []
    for d in mine:
        if d.code == DriftCode.BRANCH_TO_BRANCH_DISABLED:
            why = "branch-to-branch must be on for the gateway to learn the route"
            steps.append(Step(target.name, StepKind.ENABLE_BRANCH_TO_BRANCH, target.route_server, (d.identity,), why))
            continue
        peer = _peer(target, d.part("peer"))
        if peer is None:
            skips.append(Skip(d.identity, "peer not declared"))
            continue
        steps.append(
            Step(
                target.name,
                StepKind.PUT_CONNECTION,
                peer.name,
                (d.identity,),
                f"{d.code.value}: write the declared bgpConnection",
                connection=(peer.name, str(peer.ip), peer.asn),
            )
        )
    return steps, skips


def _nva_fixes(f: _Facts) -> Planned:
    """NVA drifts, one idempotent intent per peer; or the withdrawal when the firewall is down."""
    steps: list[Step] = []
    skips: list[Skip] = []
    for peer in f.target.peers:
        peer_steps, peer_skips = _withdraw(f, peer) if f.withdraw else _intent(f, peer)
        steps += peer_steps
        skips += peer_skips
    return steps, skips


def _intent(f: _Facts, peer: Peer) -> Planned:
    target, known = f.target, f.known
    mine = _peer_drifts(f, peer)
    # A session down and routes missing because the bgpConnection is gone (or wrong, or failed) and
    # this plan does not write it: the agent's config is not what is wrong, and an intent it
    # applies would only wait out the verification before the human hears about the connection.
    waiting = [(d, cause) for d in mine if (cause := explained_by(d, f.unwritten)) is not None]
    skips = [Skip(d.identity, f"waits for {c.code.value} of {peer.name}: no usable bgpConnection carries the "
                  "session, so a fix on the NVA cannot help") for d, c in waiting]  # fmt: skip
    mine = [d for d in mine if d.identity not in {w.identity for w, _ in waiting}]
    if not mine:
        return [], skips
    reason = None
    if not target.policy.nva_fixes:
        reason = "policy: NVA fixes are off for this target (policy.nva_fixes)"
    elif peer.agent_url is None:
        reason = f"no agent_url declared for {peer.name}"
    elif known.firewall_healthy is False:
        reason = "firewall unhealthy: pointing the route at it would black-hole traffic (policy alert)"
    else:
        reason = _nva_blocked(f, peer, need_next_hop=True)
    if reason:
        return [], skips + [Skip(d.identity, reason) for d in mine]
    assert known.ars_ips is not None
    step = Step(
        target.name,
        StepKind.AGENT_INTENT,
        peer.name,
        tuple(d.identity for d in mine),
        ", ".join(sorted({d.code.value for d in mine})),
        intent=Intent(
            peer.asn,
            tuple((ip, ARS_ASN) for ip in known.ars_ips),
            tuple(str(p) for p in target.prefixes),
            known.firewall_ip,
        ),
    )
    return [step], skips


def _withdraw(f: _Facts, peer: Peer) -> Planned:
    """Firewall unhealthy + policy withdraw: the peer stops originating; its route drifts are moot."""
    mine = _peer_drifts(f, peer)
    reason = _nva_blocked(f, peer, need_next_hop=False)
    if reason is None and (peer.agent_url is None or not f.target.policy.nva_fixes):
        reason = "firewall unhealthy; withdraw needs an agent and policy.nva_fixes"
    if reason:
        return [], [Skip(d.identity, reason) for d in mine]
    assert f.known.ars_ips is not None
    step = Step(
        f.target.name,
        StepKind.AGENT_WITHDRAW,
        peer.name,
        tuple(d.identity for d in f.drifts if d.code == DriftCode.FIREWALL_UNHEALTHY),
        "firewall unhealthy and policy is withdraw: on-premises falls back to its own breakout",
        intent=Intent(peer.asn, tuple((ip, ARS_ASN) for ip in f.known.ars_ips), (), None),
    )
    why = "firewall unhealthy: the default route is withdrawn on purpose (policy withdraw)"
    return [step], [Skip(d.identity, why) for d in mine]


def _within_budget(steps: list[Step], budget: int) -> tuple[list[Step], list[Skip]]:
    over = [Skip(i, f"action budget of {budget} steps per pass reached") for s in steps[budget:] for i in s.fixes]
    return steps[:budget], over


def _left_alone(f: _Facts, decided: set[str]) -> list[Skip]:
    """A reason for every drift no sub-planner took: leftovers = drifts - fixed - skipped."""
    out = []
    for d in f.drifts:
        if d.identity in decided:
            continue
        if d.code == DriftCode.OBSERVATION_FAILED:
            out.append(Skip(d.identity, "state unknown: nothing is fixed from a failed read"))
        elif d.fixer == Fixer.HUMAN:
            out.append(Skip(d.identity, "needs a human (never changed automatically)"))
        else:
            out.append(Skip(d.identity, "not tied to a declared peer: nothing can be planned for it"))
    return out


def _first_reason(skips: list[Skip]) -> list[Skip]:
    """One reason per identity: the first sub-planner's (the more specific) wins."""
    first: dict[str, Skip] = {}
    for s in skips:
        first.setdefault(s.identity, s)
    return list(first.values())


# ---- shared rules ---------------------------------------------------------------------------------


def _peer_drifts(f: _Facts, peer: Peer) -> list[Drift]:
    return [d for d in f.drifts if d.fixer == Fixer.NVA_AGENT and d.part("peer") == peer.name]


def _on_hold(target: Target, now: datetime) -> str | None:
    if target.suspend:
        return "target suspended: observe and record only"
    for w in target.maintenance:
        if w.start <= now < w.end:
            return f"maintenance window until {w.end.isoformat()}" + (f" ({w.reason})" if w.reason else "")
    return None


def _nva_blocked(f: _Facts, peer: Peer, need_next_hop: bool) -> str | None:
    reads = f.failed_reads
    if reads & set(_NVA_INPUTS):
        return "state unknown: " + ", ".join(sorted(reads & set(_NVA_INPUTS))) + " failed"
    if any(d.part("read") == "agent.state" and d.part("resource") == peer.name for d in f.failed):
        return f"state unknown: the agent of {peer.name} could not be read"
    if peer.name in f.known.routes_unknown:
        return f"state unknown: learned routes of {peer.name} could not be read"
    if f.known.ars_ips is None or len(f.known.ars_ips) == 0:
        return "state unknown: Route Server IPs are not known"
    if need_next_hop and f.known.firewall_ip is None:
        return "state unknown: the firewall's private IP is not known"
    return None


def _peer(target: Target, name: str | None) -> Peer | None:
    return next((p for p in target.peers if p.name == name), None)
