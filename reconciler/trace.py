"""The path of internet traffic through the design, hop by hop, from one observation (pure).

Owns the order of the hops (control plane first: the first hop that is not whole is the root
cause, unless the cause table in `causes` names a later one), each hop's verdict and evidence,
and which drift each hop explains. Must not do I/O or
decide drift itself: verdicts come from `diff`'s drifts and the observation.

    on-premises (per gateway peer):  Route Server -> peering -> NVA -> Route Server learned
        -> branch-to-branch -> gateway learned -> gateway advertises -> firewall -> firewall egress
    watched subnet:                  Route Server learned ... -> the subnet's effective route
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, ip_network

from reconciler.causes import root_cause
from reconciler.desired import ARS_ASN, Peer, ProbeExpect, Target
from reconciler.diff import INSTANCES, diff, instance_name
from reconciler.drift import Drift, DriftCode
from reconciler.effective_routes import (
    CandidateRoute,
    HopType,
    Requirement,
    from_effective,
    programmed_routes,
    resolve,
    subnet_routes,
    violations,
)
from reconciler.observed import AgentView, Gateway, Hub, Observation, Route, SubnetRouting, Unknown

FIREWALL_SUBNET = "AzureFirewallSubnet"  # the name Azure requires for the firewall's subnet


class Verdict(StrEnum):
    OK = "ok"
    BROKEN = "broken"
    UNKNOWN = "unknown"


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """Broken beats unknown beats ok: one broken hop breaks the path, one broken path the trace."""
    seen = set(verdicts)
    return next((v for v in (Verdict.BROKEN, Verdict.UNKNOWN) if v in seen), Verdict.OK)


class HopKind(StrEnum):
    ROUTE_SERVER = "route_server"
    PEERING = "peering"
    NVA = "nva"
    ROUTE_SERVER_LEARNED = "route_server_learned"
    BRANCH_TO_BRANCH = "branch_to_branch"
    GATEWAY_LEARNED = "gateway_learned"
    GATEWAY_ADVERTISED = "gateway_advertised"
    FIREWALL = "firewall"
    SUBNET_ROUTE = "subnet_route"
    NIC_ROUTE = "nic_route"


class SourceKind(StrEnum):
    ONPREM = "onprem"
    SUBNET = "subnet"
    NIC = "nic"


# Drifts that are reported on a hop without breaking the path: the traffic still flows.
NOT_BREAKING = frozenset(
    {DriftCode.PEER_UNEXPECTED, DriftCode.ROUTE_LIMIT_RISK, DriftCode.ROUTE_UNEXPECTED, DriftCode.NIC_ROUTE_MISMATCH}
)


@dataclass(frozen=True)
class Evidence:
    """What was read to judge a hop: the read (as in OBSERVATION_FAILED), the field, the instance."""

    read: str
    field: str
    instance: str
    value: str

    def to_dict(self) -> dict[str, str]:
        return {"read": self.read, "field": self.field, "instance": self.instance, "value": self.value}


@dataclass(frozen=True)
class Hop:
    id: str  # stable inside a target, e.g. "learned:nva1", "gateway_advertised:ergw:10.0.0.12"
    kind: HopKind
    label: str
    verdict: Verdict
    evidence: tuple[Evidence, ...] = ()
    drifts: tuple[Drift, ...] = ()  # the drifts this hop explains

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "label": self.label,
            "verdict": self.verdict.value,
            "evidence": [e.to_dict() for e in self.evidence],
            "drifts": [{"identity": d.identity, "code": d.code.value, "message": d.message} for d in self.drifts],
        }


@dataclass(frozen=True)
class Path:
    source_kind: SourceKind
    source: str  # "ergw:10.0.0.12" or "hub-vnet:AzureFirewallSubnet"
    hops: tuple[Hop, ...]

    @property
    def verdict(self) -> Verdict:
        return worst(h.verdict for h in self.hops)

    @property
    def root_cause(self) -> Hop | None:
        """The first broken hop, unless the cause table (reconciler.causes, the one the cards
        inhibit and group by) says a drift on a later broken hop explains it: then that hop. E.g.
        a failed firewall explains the stale next hop the NVA still sends."""
        broken = [h for h in self.hops if h.verdict is Verdict.BROKEN]
        if not broken:
            return None
        drifts = [d for h in broken for d in h.drifts]
        for d in broken[0].drifts:
            cause = root_cause(d, drifts).identity
            if cause != d.identity:
                return next(h for h in broken if any(x.identity == cause for x in h.drifts))
        return broken[0]

    def to_dict(self) -> dict[str, object]:
        cause = self.root_cause
        return {
            "source_kind": self.source_kind.value,
            "source": self.source,
            "verdict": self.verdict.value,
            "root_cause": cause.id if cause else None,
            "hops": [h.to_dict() for h in self.hops],
        }


@dataclass(frozen=True)
class Trace:
    """Every path of one prefix in one target."""

    target: str
    prefix: str
    paths: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def verdict(self) -> Verdict:
        return worst(p.verdict for p in self.paths)

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "prefix": self.prefix,
            "verdict": self.verdict.value,
            "paths": [p.to_dict() for p in self.paths],
        }


def trace(
    target: Target, obs: Observation, prefix: str | None = None, drifts: Sequence[Drift] | None = None
) -> list[Trace]:
    """One trace per prefix: `prefix`, or else each of the target's prefixes."""
    found = list(drifts) if drifts is not None else diff(target, obs)
    prefixes = [ip_network(prefix, strict=False)] if prefix else list(target.prefixes)
    return [_trace(target, obs, p, found) for p in prefixes if isinstance(p, IPv4Network)]


# ---- building the hops --------------------------------------------------------------------------------


def _trace(target: Target, obs: Observation, prefix: IPv4Network, drifts: Sequence[Drift]) -> Trace:
    relevant = [d for d in drifts if _prefix_matches(d, prefix, target.prefixes)]
    b = _Builder(target, obs, prefix, relevant)
    control = [b.route_server()]
    for peer in target.peers:
        control += [b.peering(peer), b.nva(peer), b.learned(peer)]
    firewall = b.firewall()
    egress = b.subnet_hop(FIREWALL_SUBNET, firewall_egress=True)
    paths: list[Path] = []
    for gw in target.gateways:
        gw_hops = [b.branch_to_branch(), b.gateway_learned(gw.name)]
        for onprem in gw.onprem_peers:
            hops = (*control, *gw_hops, b.gateway_advertised(gw.name, str(onprem)), firewall, egress)
            paths.append(Path(SourceKind.ONPREM, f"{gw.name}:{onprem}", hops))
    for inv in target.subnets:
        key = f"{inv.vnet}:{inv.subnet}"
        if inv.subnet == FIREWALL_SUBNET:
            paths.append(Path(SourceKind.SUBNET, key, (egress,)))
        else:
            paths.append(Path(SourceKind.SUBNET, key, (b.subnet_hop(inv.subnet, vnet=inv.vnet),)))
    for probe in target.probes:
        nic = b.nic(probe.nic)
        hops = (*control, nic, firewall, egress) if probe.expect is ProbeExpect.FIREWALL else (nic,)
        paths.append(Path(SourceKind.NIC, probe.nic, hops))
    return Trace(target.name, str(prefix), tuple(paths))


def _prefix_matches(d: Drift, prefix: IPv4Network, design: Sequence[IPv4Network]) -> bool:
    p = d.part("prefix")
    return p is None or _on_path(p, prefix, design)


def _on_path(route_prefix: str, prefix: IPv4Network, design: Sequence[IPv4Network]) -> bool:
    """A route carries traffic for `prefix` when it covers it, or is one of the design's prefixes inside it
    (tracing 0.0.0.0/0 through a VPN hub follows its two /1 halves). An unrelated more specific route
    (10.0.0.0/16 sent back with 65515) is not on the internet path."""
    try:
        net = ip_network(route_prefix, strict=False)
    except ValueError:
        return False
    if not isinstance(net, IPv4Network):
        return False
    return prefix.subnet_of(net) or (net in design and net.subnet_of(prefix))


def _unknown_subject(u: Unknown) -> str:
    return f"read={u.operation}/resource={u.resource}"


class _Builder:
    def __init__(self, target: Target, obs: Observation, prefix: IPv4Network, drifts: Sequence[Drift]) -> None:
        self.t, self.obs, self.prefix, self.drifts = target, obs, prefix, drifts
        self.fw = obs.firewall_ip

    # -- helpers
    def _on_path(self, route_prefix: str) -> bool:
        return _on_path(route_prefix, self.prefix, self.t.prefixes)

    def _matching(self, codes: Iterable[DriftCode], **parts: str) -> tuple[Drift, ...]:
        wanted = set(codes)
        return tuple(d for d in self.drifts if d.code in wanted and all(d.part(k) == v for k, v in parts.items()))

    def _unknown_drifts(self, unknowns: Iterable[Unknown]) -> tuple[Drift, ...]:
        subjects = {_unknown_subject(u) for u in unknowns}
        return tuple(d for d in self.drifts if d.code is DriftCode.OBSERVATION_FAILED and d.subject in subjects)

    def _hop(
        self,
        hop_id: str,
        kind: HopKind,
        label: str,
        evidence: list[Evidence],
        drifts: tuple[Drift, ...],
        unknowns: Sequence[Unknown] = (),
        broken: bool = False,
    ) -> Hop:
        blind = self._unknown_drifts(unknowns)
        breaking = broken or any(d.code not in NOT_BREAKING for d in drifts)
        verdict = Verdict.BROKEN if breaking else (Verdict.UNKNOWN if unknowns else Verdict.OK)
        for u in unknowns:
            evidence.append(Evidence(u.operation, "(read failed)", u.resource, u.reason))
        return Hop(hop_id, kind, label, verdict, tuple(evidence), (*drifts, *blind))

    def _route_problem(self, routes: Iterable[Route]) -> str | None:
        """Why these routes do not carry the prefix to the firewall, or None when they do."""
        mine = [r for r in routes if self._on_path(r.prefix)]
        if not mine:
            return "absent"
        for r in mine:
            if ARS_ASN in r.asns:
                return f"{r.prefix} has AS path {r.as_path} (contains {ARS_ASN})"
            if self.fw is not None and r.next_hop != self.fw:
                return f"{r.prefix} next hop {r.next_hop}, not the firewall {self.fw}"
        return None

    # -- hops
    def route_server(self) -> Hop:
        hub = self.obs.hub
        ev: list[Evidence] = []
        unknowns = [hub] if isinstance(hub, Unknown) else []
        if isinstance(hub, Hub):
            ev.append(
                Evidence(
                    "hub.get", "provisioningState, routingState", "", f"{hub.provisioning_state}, {hub.routing_state}"
                )
            )
            ev.append(Evidence("hub.get", "virtualRouterIps", "", ", ".join(hub.ips)))
        elif hub is None:
            ev.append(Evidence("hub.get", "", "", "not found"))
        drifts = self._matching([DriftCode.ROUTE_SERVER_UNHEALTHY])
        return self._hop(
            "route_server", HopKind.ROUTE_SERVER, f"Route Server {self.t.route_server}", ev, drifts, unknowns
        )

    def peering(self, peer: Peer) -> Hop:
        conns = self.obs.connections
        ev: list[Evidence] = []
        unknowns = [conns] if isinstance(conns, Unknown) else []
        if not isinstance(conns, Unknown):
            for c in conns:
                if c.name == peer.name or c.peer_ip == str(peer.ip):
                    value = f"peer {c.peer_ip} AS {c.peer_asn}, {c.provisioning_state}, {c.connection_state}"
                    ev.append(
                        Evidence("bgp.list", "peerIp, peerAsn, provisioningState, connectionState", c.name, value)
                    )
        codes = [DriftCode.PEER_MISSING, DriftCode.PEER_MISMATCH, DriftCode.PEER_FAILED, DriftCode.PEER_DOWN]
        drifts = self._matching([*codes, DriftCode.ROUTE_LIMIT_RISK], peer=peer.name)
        label = f"BGP peering {peer.name} ({peer.ip}, AS {peer.asn}) with both instances"
        return self._hop(f"peering:{peer.name}", HopKind.PEERING, label, ev, drifts, unknowns)

    def nva(self, peer: Peer) -> Hop:
        view = self.obs.agents.get(peer.name)
        ev: list[Evidence] = []
        unknowns = [view] if isinstance(view, Unknown) else []
        broken = False
        route_codes = [DriftCode.ROUTE_MISSING, DriftCode.ROUTE_NEXT_HOP_WRONG, DriftCode.ROUTE_REJECTED_LOOP]
        drifts: tuple[Drift, ...] = ()
        if isinstance(view, AgentView):
            for n in view.neighbors:
                inst = instance_name(self.obs.hub, n.ip)
                problem = self._route_problem(n.advertised) if n.state == "Established" else f"session {n.state}"
                sent = ", ".join(_route_text(r) for r in n.advertised if self._on_path(r.prefix)) or "nothing"
                ev.append(Evidence("agent.state", "neighbors[].advertised", inst, f"to {n.ip}: {sent}"))
                if problem is not None:
                    broken = True
                    drifts += self._matching(route_codes, peer=peer.name, instance=inst)
        elif view is None:
            ev.append(Evidence("agent.state", "", peer.name, "no agent: judged from Route Server's side"))
        drifts += self._matching([DriftCode.ROUTE_UNEXPECTED], peer=peer.name)
        label = f"NVA {peer.name} advertises {self.prefix} via the firewall"
        return self._hop(f"nva:{peer.name}", HopKind.NVA, label, ev, drifts, unknowns, broken)

    def learned(self, peer: Peer) -> Hop:
        conns = self.obs.connections
        conn = None
        if not isinstance(conns, Unknown):
            conn = next((c for c in conns if c.name == peer.name), None) or next(
                (c for c in conns if c.peer_ip == str(peer.ip)), None
            )
        learned = self.obs.learned.get(conn.name) if conn is not None else None
        ev: list[Evidence] = []
        unknowns = [learned] if isinstance(learned, Unknown) else []
        broken = False
        drifts: tuple[Drift, ...] = ()
        route_codes = [DriftCode.ROUTE_MISSING, DriftCode.ROUTE_NEXT_HOP_WRONG, DriftCode.ROUTE_REJECTED_LOOP]
        if learned is not None and not isinstance(learned, Unknown):
            for inst in sorted(set(INSTANCES) | set(learned)):
                routes = [r for r in learned.get(inst, ()) if not r.source_peer or r.source_peer == str(peer.ip)]
                got = ", ".join(_route_text(r) for r in routes if self._on_path(r.prefix)) or "absent"
                ev.append(Evidence("routes.learned", "network, nextHop, asPath", inst, got))
                if self._route_problem(routes) is not None:
                    broken = True
                    drifts += self._matching(route_codes, peer=peer.name, instance=inst)
        label = f"Route Server learned {self.prefix} from {peer.name} on both instances"
        return self._hop(f"learned:{peer.name}", HopKind.ROUTE_SERVER_LEARNED, label, ev, drifts, unknowns, broken)

    def branch_to_branch(self) -> Hop:
        hub = self.obs.hub
        ev = (
            [Evidence("hub.get", "allowBranchToBranchTraffic", "", str(hub.branch_to_branch).lower())]
            if isinstance(hub, Hub)
            else []
        )
        drifts = self._matching([DriftCode.BRANCH_TO_BRANCH_DISABLED])
        unknowns = [hub] if isinstance(hub, Unknown) else []
        return self._hop(
            "branch_to_branch",
            HopKind.BRANCH_TO_BRANCH,
            "branch-to-branch (Route Server <-> gateway)",
            ev,
            drifts,
            unknowns,
        )

    def gateway_learned(self, name: str) -> Hop:
        gw = self.obs.gateways.get(name)
        ev: list[Evidence] = []
        unknowns: list[Unknown] = []
        if isinstance(gw, Unknown):
            unknowns.append(gw)
        elif isinstance(gw, Gateway):
            if isinstance(gw.learned, Unknown):
                unknowns.append(gw.learned)
            else:
                routes = (f"{_route_text(r)} from {r.source_peer}" for r in gw.learned if self._on_path(r.prefix))
                got = ", ".join(sorted(set(routes))) or "absent"
                ev.append(Evidence("gateway.learned", "network, nextHop, sourcePeer", name, got))
        elif name in self.obs.gateways:
            ev.append(Evidence("gateway.learned", "", name, "gateway not found"))
        drifts = self._matching([DriftCode.GATEWAY_NOT_LEARNING], gateway=name)
        label = f"gateway {name} learned {self.prefix} from Route Server"
        return self._hop(f"gateway_learned:{name}", HopKind.GATEWAY_LEARNED, label, ev, drifts, unknowns)

    def gateway_advertised(self, name: str, onprem: str) -> Hop:
        gw = self.obs.gateways.get(name)
        ev: list[Evidence] = []
        unknowns: list[Unknown] = []
        if isinstance(gw, Gateway):
            adv = gw.advertised.get(onprem)
            if isinstance(adv, Unknown):
                unknowns.append(adv)
            elif adv is not None:
                got = ", ".join(r.prefix for r in adv if self._on_path(r.prefix)) or "absent"
                ev.append(Evidence("gateway.advertised", "network", f"{name}:{onprem}", got))
        drifts = self._matching([DriftCode.GATEWAY_NOT_ADVERTISING], gateway=name, onprem=onprem)
        label = f"gateway {name} advertises {self.prefix} to on-premises {onprem}"
        return self._hop(f"gateway_advertised:{name}:{onprem}", HopKind.GATEWAY_ADVERTISED, label, ev, drifts, unknowns)

    def firewall(self) -> Hop:
        fw = self.obs.firewall
        ev: list[Evidence] = []
        unknowns = [fw] if isinstance(fw, Unknown) else []
        name = self.t.firewall.name
        if name is None:
            ev.append(Evidence("desired", "firewall.private_ip", "", f"fixed next hop {self.t.firewall.private_ip}"))
        elif fw is None:
            ev.append(Evidence("firewall.get", "", name, "not found"))
        elif not isinstance(fw, Unknown):
            ev.append(
                Evidence(
                    "firewall.get",
                    "provisioningState, privateIPAddress",
                    name,
                    f"{fw.provisioning_state}, {fw.private_ip or 'no IP'}",
                )
            )
        drifts = self._matching([DriftCode.FIREWALL_UNHEALTHY])
        label = f"Azure Firewall {name or self.t.firewall.private_ip} ({self.fw or 'no IP'})"
        return self._hop("firewall", HopKind.FIREWALL, label, ev, drifts, unknowns)

    def subnet_hop(self, subnet: str, firewall_egress: bool = False, vnet: str | None = None) -> Hop:
        """The watched subnet's effective route; `vnet` picks it when spokes share a subnet name."""
        inv = next((s for s in self.t.subnets if s.subnet == subnet and vnet in (None, s.vnet)), None)
        if inv is None:
            ev = [Evidence("desired", "subnets", subnet, "not declared: its route is not watched")]
            return Hop(f"subnet:{subnet}", HopKind.SUBNET_ROUTE, f"{subnet} -> Internet", Verdict.UNKNOWN, tuple(ev))
        key = f"{inv.vnet}:{inv.subnet}"
        sn = self.obs.subnets.get(key)
        ev = []
        unknowns = [sn] if isinstance(sn, Unknown) else []
        if isinstance(sn, SubnetRouting):
            ev += self._effective(sn, inv.routes[0].next_hop_type, key)
        elif key in self.obs.subnets and sn is None:
            ev.append(Evidence("vnet.get", "subnets[]", key, "subnet not found"))
        drifts = self._matching([DriftCode.UDR_INVARIANT_BROKEN], subnet=key)
        want = ", ".join(f"{r.prefix} -> {r.next_hop_type}" for r in inv.routes)
        label = f"{key} effective route ({want})" if not firewall_egress else f"firewall egress: {key} -> Internet"
        return self._hop(f"subnet:{key}", HopKind.SUBNET_ROUTE, label, ev, drifts, unknowns)

    def nic(self, name: str) -> Hop:
        routes = self.obs.nics.get(name)
        ev: list[Evidence] = []
        unknowns = [routes] if isinstance(routes, Unknown) else []
        if routes is None and name in self.obs.nics:
            ev.append(Evidence("nic.routes", "", name, "NIC not found"))
        elif routes is not None and not isinstance(routes, Unknown):
            decisions = resolve(from_effective(routes), self.prefix)
            wins = sorted({" + ".join(r.describe() for r in d.routes) for d in decisions if d.internet})
            ev.append(Evidence("nic.routes", "effectiveRouteTable (Active)", name, " | ".join(wins) or "no route"))
        drifts = self._matching([DriftCode.NIC_ROUTE_WRONG, DriftCode.NIC_ROUTE_MISMATCH], nic=name)
        return self._hop(
            f"nic:{name}", HopKind.NIC_ROUTE, f"NIC {name} effective route (read from ARM)", ev, drifts, unknowns
        )

    def _effective(self, sn: SubnetRouting, hop: str, key: str) -> list[Evidence]:
        programmed = programmed_routes(self.obs)
        bgp: tuple[CandidateRoute, ...] = () if isinstance(programmed, Unknown) else programmed
        decisions = resolve(subnet_routes(sn, bgp), self.prefix)
        req = Requirement(self.prefix, HopType(hop))
        wins = {d.routes for d in decisions if d.internet} or {d.routes for d in decisions}
        value = " | ".join(sorted(" + ".join(r.describe() for r in w) for w in wins))
        bad = violations(req, decisions)
        return [
            Evidence(
                "vnet.get, routetable.get, routes.learned",
                "effective route (computed)",
                key,
                value + (" [goes elsewhere]" if bad else ""),
            )
        ]


def _route_text(r: Route) -> str:
    path = f" path {r.as_path}" if r.as_path else ""
    return f"{r.prefix} via {r.next_hop}{path}"
