"""The pure diff: (desired target, observation) -> drifts.

Owns the rules that decide what counts as drift (DESIGN §5, §11). Must not do I/O, read a clock
or log. Unknown observations become OBSERVATION_FAILED and never any other drift for that part.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_network

from reconciler.asn import ARS_ASN
from reconciler.desired import (
    DEFAULT_ROUTE,
    ROUTES_PER_PEER_LIMIT,
    ROUTES_TO_EXPRESSROUTE_LIMIT,
    GatewayType,
    Peer,
    ProbeExpect,
    Target,
)
from reconciler.drift import Drift, DriftCode
from reconciler.effective_routes import (
    CandidateRoute,
    HopType,
    Requirement,
    RouteSource,
    disagreements,
    from_effective,
    programmed_routes,
    resolve,
    subnet_routes,
    violations,
)
from reconciler.observed import (
    AgentView,
    Connection,
    Firewall,
    FirewallHealth,
    Gateway,
    HealthStatus,
    Hub,
    InstanceRoutes,
    Observation,
    Route,
    SubnetRouting,
    Unknown,
)

INSTANCES = ("RouteServiceRole_IN_0", "RouteServiceRole_IN_1")  # platform rule 1: always two
ESTABLISHED = "Established"


def instance_name(hub: Hub | Unknown | None, ars_ip: str, learned: Iterable[InstanceRoutes] = ()) -> str:
    """ARS instance name for a Route Server IP.

    The instance is the one whose routes carry that IP as their `localAddress`: published output has
    IN_0 on the higher of the two virtualRouterIps, so the position in that list proves nothing.
    An instance with no routes (its session is down) is the one no other IP claimed; only when the
    learned routes say nothing at all does the position decide.
    """
    claimed: dict[str, str] = {}  # ARS IP -> instance, from the routes' localAddress
    instances: set[str] = set()
    for routes in learned:
        for inst, entries in routes.items():
            instances.add(inst)
            addresses = {r.local_address for r in entries}
            if len(addresses) == 1 and None not in addresses:
                claimed.setdefault(str(next(iter(addresses))), inst)
    if ars_ip in claimed:
        return claimed[ars_ip]
    ips = hub.ips if isinstance(hub, Hub) else ()
    free_instances = sorted(instances - set(claimed.values()))
    free_ips = [ip for ip in ips if ip not in claimed]
    if claimed and free_ips == [ars_ip] and len(free_instances) == 1:
        return free_instances[0]
    if ars_ip in ips:
        return f"RouteServiceRole_IN_{ips.index(ars_ip)}"
    return ars_ip


def diff(target: Target, obs: Observation) -> list[Drift]:
    """Every drift of one target, de-duplicated by identity (first finding wins), in stable order."""
    found = _Collector(target.name)
    _route_server(target, obs, found)
    connections = _peers(target, obs, found)
    _learned_routes(target, obs, connections, found)
    _agents(target, obs, found)
    _firewall(target, obs, found)
    _gateways(target, obs, found)
    _subnets(target, obs, found)
    _probes(target, obs, found)
    return found.drifts


def matched_connections(target: Target, obs: Observation) -> dict[str, str]:
    """Peer name -> the name of the bgpConnection that carries it, by the diff's own matching rule."""
    return {peer: conn.name for peer, conn in _peers(target, obs, _Collector(target.name)).items()}


class _Collector:
    def __init__(self, target: str) -> None:
        self.target = target
        self._by_identity: dict[str, Drift] = {}

    def add(self, code: DriftCode, subject: str, message: str, expected: object = "", observed: object = "") -> None:
        d = Drift(self.target, code, subject, message, str(expected), str(observed))
        self._by_identity.setdefault(d.identity, d)

    def unknown(self, u: Unknown) -> None:
        self.add(
            DriftCode.OBSERVATION_FAILED,
            f"read={u.operation}/resource={u.resource}",
            f"could not read {u.operation} for {u.resource}: {u.reason}; state unknown, nothing is fixed from it",
            "readable",
            u.reason,
        )

    @property
    def drifts(self) -> list[Drift]:
        return list(self._by_identity.values())


def _route_server(target: Target, obs: Observation, found: _Collector) -> None:
    hub = obs.hub
    subject = f"route_server={target.route_server}"
    if isinstance(hub, Unknown):
        found.unknown(hub)
        return
    if hub is None:
        found.add(DriftCode.ROUTE_SERVER_UNHEALTHY, subject, "Route Server not found", "exists", "not found")
        return
    if hub.provisioning_state != "Succeeded" or hub.routing_state != "Provisioned":
        # Platform rule 10: Succeeded + Provisioning is normal right after a change; the alert
        # hold-down, not the diff, keeps that from paging.
        found.add(
            DriftCode.ROUTE_SERVER_UNHEALTHY,
            subject,
            "Route Server is not healthy",
            "provisioningState Succeeded, routingState Provisioned",
            f"provisioningState {hub.provisioning_state}, routingState {hub.routing_state}",
        )
    if target.branch_to_branch and not hub.branch_to_branch:
        found.add(
            DriftCode.BRANCH_TO_BRANCH_DISABLED,
            subject,
            "branch-to-branch is off: the gateway will not learn the default route from Route Server",
            "allowBranchToBranchTraffic true",
            "allowBranchToBranchTraffic false",
        )


def _peers(target: Target, obs: Observation, found: _Collector) -> dict[str, Connection]:
    """Match desired peers to bgpConnections; returns the usable connection per peer name."""
    conns = obs.connections
    if isinstance(conns, Unknown):
        found.unknown(conns)
        return {}
    matched: dict[str, Connection] = {}
    used: set[str] = set()
    by_name = {c.name: c for c in conns}
    by_ip = {c.peer_ip: c for c in conns}
    for peer in target.peers:
        conn = by_name.get(peer.name)
        if conn is None:
            # A connection with the right IP under another name carries the session just as well.
            alt = by_ip.get(str(peer.ip))
            if alt is not None and alt.name not in {p.name for p in target.peers}:
                conn = alt
        subject = f"peer={peer.name}"
        want = f"peerIp {peer.ip}, peerAsn {peer.asn}"
        if conn is None:
            found.add(DriftCode.PEER_MISSING, subject, f"no bgpConnection for NVA {peer.name}", want, "absent")
            continue
        used.add(conn.name)
        if conn.peer_ip != str(peer.ip) or conn.peer_asn != peer.asn:
            found.add(
                DriftCode.PEER_MISMATCH,
                subject,
                f"bgpConnection {conn.name} does not match the NVA",
                want,
                f"peerIp {conn.peer_ip}, peerAsn {conn.peer_asn}",
            )
            continue
        if conn.provisioning_state == "Failed":
            found.add(
                DriftCode.PEER_FAILED,
                subject,
                f"bgpConnection {conn.name} is in a Failed provisioning state",
                "provisioningState Succeeded",
                "provisioningState Failed",
            )
            continue
        matched[peer.name] = conn
    for conn in conns:
        if conn.name not in used:
            found.add(
                DriftCode.PEER_UNEXPECTED,
                f"peer={conn.name}",
                f"bgpConnection {conn.name} ({conn.peer_ip}, AS {conn.peer_asn}) is not declared; never auto-deleted",
                "not present",
                f"peerIp {conn.peer_ip}, peerAsn {conn.peer_asn}",
            )
    return matched


def _learned_routes(target: Target, obs: Observation, connections: dict[str, Connection], found: _Collector) -> None:
    wanted = [str(p) for p in target.prefixes]
    firewall_ip = obs.firewall_ip
    for peer in target.peers:
        conn = connections.get(peer.name)
        if conn is None:
            continue
        learned = obs.learned.get(conn.name)
        if learned is None:
            continue
        if isinstance(learned, Unknown):
            found.unknown(learned)
            continue
        if conn.connection_state != "Connected" and not isinstance(obs.agents.get(peer.name), AgentView):
            # Without the NVA's own view, a silent instance is the best evidence of which session is down.
            for inst in _instances(learned):
                if not learned.get(inst):
                    found.add(
                        DriftCode.PEER_DOWN,
                        f"peer={peer.name}/instance={inst}",
                        f"BGP session between {peer.name} and {inst} is not up",
                        "Connected",
                        conn.connection_state,
                    )
        total = 0
        for inst in _instances(learned):
            routes = [r for r in learned.get(inst, ()) if not r.source_peer or r.source_peer == str(peer.ip)]
            total = max(total, len(routes))
            _check_routes(found, peer, inst, routes, wanted, firewall_ip, side="learned by")
        if total >= target.route_limit_warn:
            found.add(
                DriftCode.ROUTE_LIMIT_RISK,
                f"peer={peer.name}",
                f"{peer.name} sends {total} routes; above {ROUTES_PER_PEER_LIMIT} Route Server drops the session",
                f"< {target.route_limit_warn}",
                total,
            )


def _instances(learned: InstanceRoutes) -> list[str]:
    return sorted(set(INSTANCES) | set(learned))


def _check_routes(
    found: _Collector,
    peer: Peer,
    inst: str,
    routes: Iterable[Route],
    wanted: list[str],
    firewall_ip: str | None,
    side: str,
) -> None:
    by_prefix: dict[str, list[Route]] = {}
    for r in routes:
        # An instance lists a prefix once per entry (e.g. per localAddress): every copy is judged.
        by_prefix.setdefault(_norm(r.prefix), []).append(r)
    for prefix in wanted:
        subject = f"peer={peer.name}/instance={inst}/prefix={prefix}"
        copies = by_prefix.get(prefix, [])
        looped = next((r for r in copies if ARS_ASN in r.asns), None)
        wrong = next((r for r in copies if firewall_ip is not None and r.next_hop != firewall_ip), None)
        if not copies:
            found.add(
                DriftCode.ROUTE_MISSING,
                subject,
                f"{prefix} from {peer.name} is not {side} {inst}",
                f"{prefix} via {firewall_ip or 'firewall'}",
                "absent",
            )
        elif looped is not None:
            found.add(
                DriftCode.ROUTE_REJECTED_LOOP,
                subject,
                f"{peer.name} sends {prefix} with AS path {looped.as_path}; Route Server drops paths containing 65515",
                f"AS path without {ARS_ASN}",
                looped.as_path,
            )
        elif wrong is not None:
            found.add(
                DriftCode.ROUTE_NEXT_HOP_WRONG,
                subject,
                f"{prefix} from {peer.name} at {inst} points to {wrong.next_hop}, not the firewall",
                f"next hop {firewall_ip}",
                f"next hop {', '.join(sorted({str(r.next_hop) for r in copies}))}",
            )
    for prefix, copies in sorted(by_prefix.items()):
        if prefix not in wanted:
            route = copies[0]
            looped_copy = any(ARS_ASN in r.asns for r in copies)
            code = DriftCode.ROUTE_REJECTED_LOOP if looped_copy else DriftCode.ROUTE_UNEXPECTED
            found.add(
                code,
                f"peer={peer.name}/instance={inst}/prefix={prefix}",
                f"{peer.name} advertises {prefix} ({route.as_path or 'local'}), which nobody declared",
                "not advertised",
                f"{prefix} via {route.next_hop}",
            )


def _agents(target: Target, obs: Observation, found: _Collector) -> None:
    """The NVA's own view: sessions per ARS instance and what FRR really sends to each."""
    wanted = [str(p) for p in target.prefixes]
    ars_ips = list(obs.hub.ips) if isinstance(obs.hub, Hub) else []
    for peer in target.peers:
        view = obs.agents.get(peer.name)
        if view is None:
            continue
        if isinstance(view, Unknown):
            found.unknown(view)
            continue
        neighbors = {n.ip: n for n in view.neighbors}
        learned = [v for v in obs.learned.values() if not isinstance(v, Unknown)]
        for ars_ip in ars_ips or sorted(neighbors):
            inst = instance_name(obs.hub, ars_ip, learned)
            n = neighbors.get(ars_ip)
            if n is None or n.state != ESTABLISHED:
                found.add(
                    DriftCode.PEER_DOWN,
                    f"peer={peer.name}/instance={inst}",
                    f"{peer.name} has no established BGP session to {ars_ip}",
                    f"neighbor {ars_ip} AS {ARS_ASN} Established",
                    "not configured" if n is None else n.state,
                )
                continue
            _check_routes(found, peer, inst, n.advertised, wanted, obs.firewall_ip, side="advertised to")


def _firewall(target: Target, obs: Observation, found: _Collector) -> None:
    if target.firewall.name is None:
        return
    fw = obs.firewall
    subject = f"firewall={target.firewall.name}"
    if isinstance(fw, Unknown):
        found.unknown(fw)
    elif fw is None:
        found.add(
            DriftCode.FIREWALL_UNHEALTHY,
            subject,
            "Azure Firewall not found",
            "Succeeded with a private IP",
            "not found",
        )
    elif not _firewall_ok(fw):
        found.add(
            DriftCode.FIREWALL_UNHEALTHY,
            subject,
            "Azure Firewall is failed or deallocated: the default route would black-hole",
            "Succeeded with a private IP",
            f"provisioningState {fw.provisioning_state}, private IP {fw.private_ip or 'none'}",
        )
    health = obs.firewall_health
    if isinstance(health, Unknown):
        found.unknown(health)
    elif isinstance(health, FirewallHealth) and health.status in (HealthStatus.DEGRADED, HealthStatus.UNHEALTHY):
        # Platform rule 13: provisioningState says nothing about health; the FirewallHealth metric does
        # (Degraded = SNAT ports exhausted: new connections fail intermittently).
        reason = f" ({health.reason})" if health.reason else ""
        found.add(
            DriftCode.FIREWALL_UNHEALTHY,
            subject,
            f"Azure Firewall reports {health.status.value}{reason} in its FirewallHealth metric",
            "FirewallHealth Healthy",
            f"FirewallHealth {health.status.value}{reason}, {health.percent:g} %",
        )


def _firewall_ok(fw: Firewall) -> bool:
    return fw.provisioning_state == "Succeeded" and fw.private_ip is not None


def _gateways(target: Target, obs: Observation, found: _Collector) -> None:
    for want in target.gateways:
        gw = obs.gateways.get(want.name)
        if gw is None and want.name not in obs.gateways:
            continue
        prefixes = [str(p) for p in target.prefixes]
        if isinstance(gw, Unknown):
            found.unknown(gw)
            continue
        if gw is None:
            for prefix in prefixes:
                found.add(
                    DriftCode.GATEWAY_NOT_LEARNING,
                    f"gateway={want.name}/prefix={prefix}",
                    f"gateway {want.name} not found",
                    "exists",
                    "not found",
                )
            continue
        _gateway_learning(found, gw, prefixes, obs.firewall_ip)
        if isinstance(gw.config, Unknown):
            found.unknown(gw.config)
        elif want.type == GatewayType.VPN and gw.config is not None and not gw.config.active_active:
            # Platform rule 14 (Route Server FAQ): a VPN gateway used with Route Server must be active-active.
            found.add(
                DriftCode.GATEWAY_NOT_ACTIVE_ACTIVE,
                f"gateway={want.name}",
                f"VPN gateway {want.name} is active-standby; Route Server needs it active-active",
                "activeActive true",
                "activeActive false",
            )
        advertisable = [
            p for p in prefixes if not (want.type == GatewayType.VPN and ip_network(p) == DEFAULT_ROUTE)
        ]  # platform rule 5: a VPN gateway never advertises 0/0, so it is not expected to
        for onprem in want.onprem_peers:
            adv = gw.advertised.get(str(onprem))
            if adv is None:
                continue
            if isinstance(adv, Unknown):
                found.unknown(adv)
                continue
            if want.type == GatewayType.EXPRESS_ROUTE and len(adv) >= target.expressroute_route_limit_warn:
                found.add(
                    DriftCode.ROUTE_LIMIT_RISK,
                    f"gateway={want.name}/onprem={onprem}",
                    f"gateway {want.name} advertises {len(adv)} routes to the ExpressRoute circuit; VNet and "
                    f"Route Server routes together must stay within {ROUTES_TO_EXPRESSROUTE_LIMIT}",
                    f"< {target.expressroute_route_limit_warn}",
                    len(adv),
                )
            have = {_norm(r.prefix) for r in adv}
            for prefix in advertisable:
                if prefix not in have:
                    found.add(
                        DriftCode.GATEWAY_NOT_ADVERTISING,
                        f"gateway={want.name}/onprem={onprem}/prefix={prefix}",
                        f"gateway {want.name} does not advertise {prefix} to on-premises peer {onprem}",
                        "advertised",
                        "absent",
                    )


def _gateway_learning(found: _Collector, gw: Gateway, prefixes: list[str], firewall_ip: str | None) -> None:
    if isinstance(gw.learned, Unknown):
        found.unknown(gw.learned)
        return
    for prefix in prefixes:
        hops = sorted({str(r.next_hop) for r in gw.learned if _norm(r.prefix) == prefix})
        ok = bool(hops) if firewall_ip is None else firewall_ip in hops
        if not ok:
            found.add(
                DriftCode.GATEWAY_NOT_LEARNING,
                f"gateway={gw.name}/prefix={prefix}",
                f"gateway {gw.name} does not hold {prefix} from Route Server with the firewall next hop",
                f"{prefix} via {firewall_ip or 'firewall'}",
                f"{prefix} via {', '.join(hops)}" if hops else "absent",
            )


def _subnets(target: Target, obs: Observation, found: _Collector) -> None:
    """Judge each subnet invariant by the route Azure really uses, not by an exact table entry.

    Longest prefix wins before source preference (effective_routes): a 0.0.0.0/0 -> Internet UDR
    loses to 0.0.0.0/1 + 128.0.0.0/1 from Route Server. The BGP side is what Route Server programs
    now plus the target's own prefixes via the firewall (what it programs when the design is
    healthy), so a detached UDR is caught even while the NVA's route happens to be missing.
    """
    programmed = programmed_routes(obs)
    now = set() if isinstance(programmed, Unknown) else {(c.prefix, c.next_hop_ip) for c in programmed}
    design = tuple(
        CandidateRoute(p, RouteSource.BGP, HopType.VIRTUAL_NETWORK_GATEWAY, obs.firewall_ip, "BGP, the design's route")
        for p in target.prefixes
        if (p, obs.firewall_ip) not in now
    )
    for inv in target.subnets:
        key = f"{inv.vnet}:{inv.subnet}"
        sn = obs.subnets.get(key)
        if key not in obs.subnets:
            continue
        if isinstance(sn, Unknown):
            found.unknown(sn)
            continue
        for req in inv.routes:
            hop_ip = str(req.next_hop_ip) if req.next_hop_ip else None
            requirement = Requirement(req.prefix, HopType(req.next_hop_type), hop_ip)
            want = requirement.describe()
            if sn is None:
                have = "subnet not found"
            else:
                propagates = not (sn.route_table is not None and sn.disable_bgp_route_propagation)
                if isinstance(programmed, Unknown) and propagates:
                    continue  # the routes Route Server programs are unknown (already reported): no verdict
                bgp = design + (() if isinstance(programmed, Unknown) else programmed)
                bad = violations(requirement, resolve(subnet_routes(sn, bgp), req.prefix))
                if not bad:
                    continue
                table = sn.route_table or "no route table attached"
                have = f"{'; '.join(d.describe() for d in bad[:4])} wins [{table}]"
            found.add(
                DriftCode.UDR_INVARIANT_BROKEN,
                f"subnet={key}/prefix={req.prefix}",
                f"subnet {key} must route internet traffic {want}; longer-prefix or preferred routes send it elsewhere",
                want,
                have,
            )
        if inv.disable_bgp_route_propagation is not None and isinstance(sn, SubnetRouting):
            actual = sn.disable_bgp_route_propagation
            if sn.route_table is not None and actual != inv.disable_bgp_route_propagation:
                found.add(
                    DriftCode.UDR_INVARIANT_BROKEN,
                    f"subnet={key}/setting=disableBgpRoutePropagation",
                    f"route table {sn.route_table} on {key} has disableBgpRoutePropagation {actual}",
                    inv.disable_bgp_route_propagation,
                    actual,
                )


def _probes(target: Target, obs: Observation, found: _Collector) -> None:
    """Probe NICs: judge the route ARM really uses for internet traffic, and compare it with ours.

    A real route that disagrees with the one computed from the same UDRs and Route Server routes
    means the model of Azure's routing is wrong for that NIC: that is a finding of its own.
    """
    programmed = programmed_routes(obs)
    for probe in target.probes:
        if probe.nic not in obs.nics:
            continue
        routes = obs.nics[probe.nic]
        if isinstance(routes, Unknown):
            found.unknown(routes)
            continue
        if probe.expect is ProbeExpect.INTERNET:
            want = Requirement(DEFAULT_ROUTE, HopType.INTERNET)
        elif obs.firewall_ip is not None:
            want = Requirement(DEFAULT_ROUTE, HopType.VIRTUAL_APPLIANCE, obs.firewall_ip)
        else:
            continue  # the firewall's IP is unknown or gone: FIREWALL_UNHEALTHY / OBSERVATION_FAILED say so
        key = f"{probe.vnet}:{probe.subnet}"
        sn = obs.subnets.get(key) if probe.vnet and probe.subnet else None
        for prefix in target.prefixes:
            subject = f"nic={probe.nic}/prefix={prefix}"
            req = Requirement(prefix, want.hop, want.ip)
            if routes is None:
                found.add(
                    DriftCode.NIC_ROUTE_WRONG, subject, f"probe NIC {probe.nic} not found", req.describe(), "not found"
                )
                continue
            real = resolve(from_effective(routes), prefix)
            bad = violations(req, real)
            if bad:
                found.add(
                    DriftCode.NIC_ROUTE_WRONG,
                    subject,
                    f"NIC {probe.nic}'s real effective route sends internet traffic elsewhere",
                    req.describe(),
                    "; ".join(d.describe() for d in bad[:4]),
                )
            if isinstance(sn, SubnetRouting) and not isinstance(programmed, Unknown):
                computed = resolve(subnet_routes(sn, programmed), prefix)
                differ = disagreements(real, computed)
                if differ:
                    a, b = differ[0]
                    found.add(
                        DriftCode.NIC_ROUTE_MISMATCH,
                        subject,
                        f"NIC {probe.nic}'s real effective route differs from the one computed for {key}",
                        f"computed: {b.describe()}",
                        f"real: {a.describe()}",
                    )


def _norm(prefix: str) -> str:
    try:
        return str(ip_network(prefix, strict=False))
    except ValueError:
        return prefix
