"""The pure planner: (target, drifts, what is known, now) -> the steps to run and what is left alone.

Owns the safety interlocks of DESIGN §6: nothing from unknown state, policy opt-ins, suspend,
maintenance windows, the action budget, the firewall-unhealthy policy. Must not do I/O, read a
clock or log; the executor runs exactly the steps of a `Plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from reconciler.desired import ARS_ASN, FirewallPolicy, Peer, Target
from reconciler.drift import Drift, DriftCode, Fixer


class StepKind(StrEnum):
    AGENT_INTENT = "agent_intent"  # push the desired BGP intent to one NVA
    AGENT_WITHDRAW = "agent_withdraw"  # stop originating the prefixes (firewall unhealthy + withdraw policy)
    PUT_CONNECTION = "put_connection"  # create or rewrite a bgpConnection (Azure write, opt-in)
    ENABLE_BRANCH_TO_BRANCH = "enable_branch_to_branch"  # Azure write, opt-in


@dataclass(frozen=True)
class Intent:
    """What one NVA must advertise: the agent's idempotent request body."""

    local_asn: int
    neighbors: tuple[tuple[str, int], ...]
    prefixes: tuple[str, ...]
    next_hop: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "local_asn": self.local_asn,
            "neighbors": [{"ip": ip, "asn": asn} for ip, asn in self.neighbors],
            "prefixes": list(self.prefixes),
            "next_hop": self.next_hop,
        }


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


@dataclass(frozen=True)
class Plan:
    target: str
    steps: tuple[Step, ...] = ()
    skipped: tuple[Skip, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


# Reads whose failure makes an NVA step unsafe: the intent is built from them.
_NVA_INPUTS = ("hub.get", "bgp.list", "firewall.get")


def plan(target: Target, drifts: Sequence[Drift], known: Known, now: datetime) -> Plan:
    mine = [d for d in drifts if d.target == target.name]
    hold = _on_hold(target, now)
    if hold:
        return Plan(target.name, (), tuple(Skip(d.identity, hold) for d in mine), (hold,))

    unknown_reads = {_read_of(d) for d in mine if d.code == DriftCode.OBSERVATION_FAILED}
    skipped: list[Skip] = []
    steps: list[Step] = []
    claimed: set[str] = set()

    def skip(d: Drift, reason: str) -> None:
        skipped.append(Skip(d.identity, reason))

    withdraw = known.firewall_healthy is False and target.firewall.unhealthy_policy == FirewallPolicy.WITHDRAW

    # Azure-side writes first: an NVA fix cannot land on a connection that does not exist.
    for d in mine:
        if d.fixer != Fixer.AZURE_WRITE:
            continue
        if not target.policy.azure_writes:
            skip(d, "policy: Azure-side writes are off for this target (policy.azure_writes)")
            continue
        if {"hub.get", "bgp.list"} & {r for r, _ in unknown_reads}:
            skip(d, "state unknown: Route Server or its connections could not be read")
            continue
        if d.code == DriftCode.BRANCH_TO_BRANCH_DISABLED:
            steps.append(
                Step(
                    target.name,
                    StepKind.ENABLE_BRANCH_TO_BRANCH,
                    target.route_server,
                    (d.identity,),
                    "branch-to-branch must be on for the gateway to learn the route",
                )
            )
        else:
            peer = _peer(target, d.part("peer"))
            if peer is None:
                skip(d, "peer not declared")
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
        claimed.add(d.identity)

    # NVA-side: one idempotent intent per peer covers every NVA drift of that peer.
    for peer in target.peers:
        peer_drifts = [d for d in mine if d.fixer == Fixer.NVA_AGENT and d.part("peer") == peer.name]
        if withdraw:
            blocked = _nva_blocked(peer, unknown_reads, known, need_next_hop=False)
            fw_drifts = [d for d in mine if d.code == DriftCode.FIREWALL_UNHEALTHY]
            if blocked:
                for d in peer_drifts:
                    skip(d, blocked)
                continue
            if peer.agent_url is None or not target.policy.nva_fixes:
                for d in peer_drifts:
                    skip(d, "firewall unhealthy; withdraw needs an agent and policy.nva_fixes")
                continue
            assert known.ars_ips is not None
            steps.append(
                Step(
                    target.name,
                    StepKind.AGENT_WITHDRAW,
                    peer.name,
                    tuple(d.identity for d in fw_drifts),
                    "firewall unhealthy and policy is withdraw: on-premises falls back to its own breakout",
                    intent=Intent(peer.asn, tuple((ip, ARS_ASN) for ip in known.ars_ips), (), None),
                )
            )
            for d in peer_drifts:
                skip(d, "firewall unhealthy: the default route is withdrawn on purpose (policy withdraw)")
            continue
        if not peer_drifts:
            continue
        reason = None
        if not target.policy.nva_fixes:
            reason = "policy: NVA fixes are off for this target (policy.nva_fixes)"
        elif peer.agent_url is None:
            reason = f"no agent_url declared for {peer.name}"
        elif known.firewall_healthy is False:
            reason = "firewall unhealthy: pointing the route at it would black-hole traffic (policy alert)"
        else:
            reason = _nva_blocked(peer, unknown_reads, known, need_next_hop=True)
        if reason:
            for d in peer_drifts:
                skip(d, reason)
            continue
        assert known.ars_ips is not None
        steps.append(
            Step(
                target.name,
                StepKind.AGENT_INTENT,
                peer.name,
                tuple(d.identity for d in peer_drifts),
                ", ".join(sorted({d.code.value for d in peer_drifts})),
                intent=Intent(
                    peer.asn,
                    tuple((ip, ARS_ASN) for ip in known.ars_ips),
                    tuple(str(p) for p in target.prefixes),
                    known.firewall_ip,
                ),
            )
        )
        claimed.update(d.identity for d in peer_drifts)

    for d in mine:
        if d.identity in claimed or any(s.identity == d.identity for s in skipped):
            continue
        if d.code == DriftCode.OBSERVATION_FAILED:
            skip(d, "state unknown: nothing is fixed from a failed read")
        elif d.fixer == Fixer.HUMAN:
            skip(d, "needs a human (never changed automatically)")

    budget = target.policy.action_budget
    if len(steps) > budget:
        over = steps[budget:]
        steps = steps[:budget]
        for s in over:
            skipped.extend(Skip(i, f"action budget of {budget} steps per pass reached") for i in s.fixes)
    return Plan(target.name, tuple(steps), tuple(skipped))


def _on_hold(target: Target, now: datetime) -> str | None:
    if target.suspend:
        return "target suspended: observe and record only"
    for w in target.maintenance:
        if w.start <= now < w.end:
            return f"maintenance window until {w.end.isoformat()}" + (f" ({w.reason})" if w.reason else "")
    return None


def _nva_blocked(peer: Peer, unknown_reads: set[tuple[str, str]], known: Known, need_next_hop: bool) -> str | None:
    reads = {r for r, _ in unknown_reads}
    if reads & set(_NVA_INPUTS):
        return "state unknown: " + ", ".join(sorted(reads & set(_NVA_INPUTS))) + " failed"
    if ("agent.state", peer.name) in unknown_reads:
        return f"state unknown: the agent of {peer.name} could not be read"
    if any(r == "routes.learned" for r, _ in unknown_reads if _ in (peer.name, str(peer.ip))):
        return f"state unknown: learned routes of {peer.name} could not be read"
    if known.ars_ips is None or len(known.ars_ips) == 0:
        return "state unknown: Route Server IPs are not known"
    if need_next_hop and known.firewall_ip is None:
        return "state unknown: the firewall's private IP is not known"
    return None


def _read_of(d: Drift) -> tuple[str, str]:
    return d.part("read") or "", d.part("resource") or ""


def _peer(target: Target, name: str | None) -> Peer | None:
    return next((p for p in target.peers if p.name == name), None)
