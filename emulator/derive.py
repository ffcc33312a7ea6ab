"""Route propagation the way Azure does it, computed from a World on every request and never stored.

Owns the platform rules (DESIGN §11): who peers with whom, ARS dropping 65515 paths, the 4,000-route
session limit, branch-to-branch gating the gateway exchange, ExpressRoute vs VPN default-route
behaviour. Pure functions over the world, returning ARM-shaped route dicts (the camelCase JSON the
SDK parses). It must not know HTTP, faults or locking: callers hold the world lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

from reconciler.desired import ROUTES_PER_PEER_LIMIT

from .world import ARS_ASN, SUCCEEDED, BgpConnection, Gateway, Nva, RouteServer, Subnet, World

# ARS tears the BGP session down when one peer sends more than this many routes: 4,000 (Route Server
# limits; the source is quoted where the constant is defined). It was 1,000 here after the limit rose.
ARS_ROUTE_LIMIT = ROUTES_PER_PEER_LIMIT

RouteDict = dict[str, object]
# Lab mode: instance index -> learned routes for one NVA peering, or None for "nothing learned".
LearnedSource = Callable[[int], "list[dict[str, object]] | None"]
LearnedSources = Mapping[str, LearnedSource]


def instance_key(index: int, rs: RouteServer | None = None) -> str:
    """The instance name for the instance at virtualRouterIps[index]; `instances_reversed` numbers
    them from the other end, as published output shows (IN_0 on the higher address)."""
    if rs is not None and rs.instances_reversed:
        index = len(rs.ips) - 1 - index
    return f"RouteServiceRole_IN_{index}"


def has_ars_asn(as_path: str) -> bool:
    return str(ARS_ASN) in as_path.replace(",", " ").replace("-", " ").split()


def connection_state(conn: BgpConnection, rs: RouteServer) -> str:
    up = {i for i in conn.connected_instances if 0 <= i < len(rs.ips)}
    if not up:
        return "NotConnected"
    return "Connected" if len(up) == len(rs.ips) else "Connecting"


def session_matches(conn: BgpConnection, nva: Nva) -> bool:
    """ARS accepts the NVA's session only if the connection names its IP and ASN and is provisioned."""
    return conn.peer_ip == nva.ip and conn.peer_asn == nva.asn and conn.provisioning_state == SUCCEEDED


def nva_sends(nva: Nva) -> list[tuple[str, str, str]]:
    """(prefix, next hop, AS path) the NVA puts on the wire: an intact out-filter drops 65515 paths."""
    return [
        (a.prefix, a.next_hop, a.as_path) for a in nva.announcements if not (nva.out_filter and has_ars_asn(a.as_path))
    ]


def learned_routes(
    world: World, rs: RouteServer, conn: BgpConnection, sources: LearnedSources | None = None
) -> dict[str, list[RouteDict]]:
    """The learnedRoutes result for one bgpConnection: routes per ARS instance."""
    result: dict[str, list[RouteDict]] = {}
    source = (sources or {}).get(conn.peer_ip)
    nva = world.find_nva(conn.peer_ip)
    for i, local in enumerate(rs.ips):
        if source is not None:
            result[instance_key(i, rs)] = [_normalise(r, local, conn.peer_ip) for r in source(i) or []]
            continue
        routes: list[RouteDict] = []
        if nva is not None and session_matches(conn, nva) and i in conn.connected_instances:
            sent = nva_sends(nva)
            if len(sent) <= ARS_ROUTE_LIMIT:
                routes = [
                    _route(local, prefix, next_hop, nva.ip, "EBgp", as_path, 32768)
                    for prefix, next_hop, as_path in sent
                    if not has_ars_asn(as_path)
                ]
        result[instance_key(i, rs)] = routes
    return result


def advertised_routes(world: World, rs: RouteServer, conn: BgpConnection) -> dict[str, list[RouteDict]]:
    """The advertisedRoutes result: what each ARS instance sends the NVA (hub prefix + on-prem via b2b)."""
    onprem = _onprem_routes(world, rs) if rs.branch_to_branch else []
    result: dict[str, list[RouteDict]] = {}
    for i, local in enumerate(rs.ips):
        if i not in conn.connected_instances:
            result[instance_key(i, rs)] = []
            continue
        routes = [_route(local, rs.hub_prefix, local, local, "Igp", str(rs.asn), 0)]
        routes += [_route(local, prefix, local, local, "EBgp", f"{rs.asn}-{as_path}", 0) for prefix, as_path in onprem]
        result[instance_key(i, rs)] = routes
    return result


def gateway_learned(world: World, gw: Gateway, sources: LearnedSources | None = None) -> list[RouteDict]:
    """getLearnedRoutes: the VNet prefix, ARS routes (only with branch-to-branch) and on-prem prefixes."""
    local = gw.ips[0] if gw.ips else "0.0.0.0"
    rs = _route_server_of(world, gw)
    routes: list[RouteDict] = []
    if rs is not None:
        routes.append(_route(local, rs.hub_prefix, None, local, "Network", "", 32768))
        if rs.branch_to_branch:
            for inst_ip, r in _ars_routes(world, rs, sources):
                routes.append(
                    _route(
                        local,
                        str(r["network"]),
                        _opt(r.get("nextHop")),
                        inst_ip,
                        "IBgp",
                        str(r["asPath"]),
                        32768,
                    )
                )
    for peer in gw.onprem_peers:
        for prefix in peer.prefixes:
            routes.append(
                _route(local, prefix, peer.ip, peer.ip, "EBgp", _onprem_path(gw, peer.asn, peer.as_path), 32769)
            )
    return routes


def gateway_advertised(
    world: World, gw: Gateway, peer_ip: str, sources: LearnedSources | None = None
) -> list[RouteDict] | None:
    """getAdvertisedRoutes?peer=: what the gateway sends one on-prem peer; None if the peer is unknown.

    ExpressRoute carries 0.0.0.0/0 to on-premises; a VPN gateway does not (DESIGN §11.5).
    """
    if not any(p.ip == peer_ip for p in gw.onprem_peers):
        return None
    local = gw.ips[0] if gw.ips else "0.0.0.0"
    rs = _route_server_of(world, gw)
    asn = rs.asn if rs is not None else ARS_ASN
    routes: list[RouteDict] = []
    if rs is not None:
        routes.append(_route(local, rs.hub_prefix, local, local, "Network", str(asn), 0))
        if rs.branch_to_branch:
            seen: set[str] = set()
            for _inst, r in _ars_routes(world, rs, sources):
                network = str(r["network"])
                if network in seen or (gw.type == "Vpn" and network == "0.0.0.0/0"):
                    continue
                seen.add(network)
                routes.append(_route(local, network, local, local, "IBgp", f"{asn}-{r['asPath']}", 0))
    return routes


def gateway_peers(world: World, gw: Gateway, sources: LearnedSources | None = None) -> list[RouteDict]:
    """getBgpPeerStatus: both ARS instances (iBGP, AS 65515) and the on-prem peers.

    The iBGP sessions with ARS stay up with branch-to-branch off; only the route exchange stops.
    """
    local = gw.ips[0] if gw.ips else "0.0.0.0"
    rs = _route_server_of(world, gw)
    peers: list[RouteDict] = []
    if rs is not None:
        received = [inst for inst, _r in _ars_routes(world, rs, sources)] if rs.branch_to_branch else []
        for ip in rs.ips:
            peers.append(_peer(local, ip, rs.asn, received.count(ip)))
    for p in gw.onprem_peers:
        peers.append(_peer(local, p.ip, p.asn, len(p.prefixes)))
    return peers


# ---- what a subnet's NICs see: effectiveRouteTable ------------------------------------------------------

# Default system routes of every subnet ("Virtual network traffic routing", Microsoft Learn,
# learn.microsoft.com/azure/virtual-network/virtual-networks-udr-overview#default); the VNet's own
# address space is added per subnet. The same shape as NetworkInterfaceEffectiveRouteTableList.json
# (azure-rest-api-specs, Microsoft.Network stable examples).
_SYSTEM_NONE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
# Among routes with the same prefix Azure uses User, then BGP, then system (same page, "How Azure
# selects a route"); the others stay listed with state Invalid. Longest prefix wins before that,
# which is the forwarding lookup's job, so every distinct prefix keeps its own Active entry.
_SOURCE_RANK = {"User": 3, "VirtualNetworkGateway": 2, "Default": 1}


def route_servers_of(world: World, sn: Subnet) -> list[RouteServer]:
    """Route Servers whose VNet holds the subnet (by the hub's address space): they program its routes."""
    net = ipaddress.ip_network(sn.address_prefix, strict=False)
    return [
        rs
        for rs in world.route_servers
        if rs.subscription.lower() == sn.subscription.lower()
        and net.subnet_of(ipaddress.ip_network(rs.hub_prefix, strict=False))  # type: ignore[arg-type]
    ]


def effective_routes(world: World, sn: Subnet, sources: LearnedSources | None = None) -> list[RouteDict]:
    """getEffectiveRouteTable for a NIC in `sn`: UDRs, BGP routes (unless propagation is off), system routes."""
    entries: list[RouteDict] = []
    rt = world.find_route_table(sn.subscription, sn.resource_group, sn.route_table) if sn.route_table else None
    if rt is not None:
        for r in rt.routes:
            entries.append(
                _effective("User", r.prefix, r.next_hop_type, [r.next_hop_ip] if r.next_hop_ip else [], r.name)
            )
    propagate = rt is None or not rt.disable_bgp_route_propagation
    servers = route_servers_of(world, sn)
    if propagate:
        seen: set[tuple[str, str]] = set()
        for rs in servers:
            # Route Server programs what it accepted from its peers (both instances hold the same set).
            for _inst, learned in _ars_routes(world, rs, sources):
                key = (str(learned["network"]), str(learned.get("nextHop")))
                if key not in seen:
                    seen.add(key)
                    hop = [str(learned["nextHop"])] if learned.get("nextHop") else []
                    entries.append(_effective("VirtualNetworkGateway", key[0], "VirtualNetworkGateway", hop))
            for gw in world.gateways_of(rs):
                for peer in gw.onprem_peers:
                    for prefix in peer.prefixes:
                        if (prefix, peer.ip) not in seen:
                            seen.add((prefix, peer.ip))
                            entries.append(
                                _effective("VirtualNetworkGateway", prefix, "VirtualNetworkGateway", [peer.ip])
                            )
    for rs in servers[:1]:
        entries.append(_effective("Default", rs.hub_prefix, "VnetLocal", []))
    entries.append(_effective("Default", "0.0.0.0/0", "Internet", []))
    entries += [_effective("Default", p, "None", []) for p in _SYSTEM_NONE]
    best: dict[str, int] = {}
    for e in entries:
        prefix = _first_prefix(e)
        best[prefix] = max(best.get(prefix, 0), _SOURCE_RANK[str(e["source"])])
    for e in entries:
        e["state"] = "Active" if _SOURCE_RANK[str(e["source"])] == best[_first_prefix(e)] else "Invalid"
    return entries


def _effective(source: str, prefix: str, hop_type: str, hop_ips: list[str], name: str | None = None) -> RouteDict:
    out: RouteDict = {
        "source": source,
        "state": "Active",
        "addressPrefix": [prefix],
        "nextHopIpAddress": hop_ips,
        "nextHopType": hop_type,
    }
    if name is not None:
        out["name"] = name
    return out


def _first_prefix(e: RouteDict) -> str:
    prefixes = e["addressPrefix"]
    assert isinstance(prefixes, list)
    return str(ipaddress.ip_network(prefixes[0], strict=False))


# ---- helpers ----------------------------------------------------------------------------------------


def _route_server_of(world: World, gw: Gateway) -> RouteServer | None:
    if gw.route_server is None:
        return None
    return world.find_route_server(gw.subscription, gw.resource_group, gw.route_server)


def _ars_routes(world: World, rs: RouteServer, sources: LearnedSources | None) -> list[tuple[str, RouteDict]]:
    """Every route any ARS instance learned from any NVA, as (instance IP, route)."""
    out: list[tuple[str, RouteDict]] = []
    for conn in rs.connections:
        for i, routes in enumerate(learned_routes(world, rs, conn, sources).values()):
            out += [(rs.ips[i], r) for r in routes]
    return out


def _onprem_routes(world: World, rs: RouteServer) -> list[tuple[str, str]]:
    return [
        (prefix, _onprem_path(gw, peer.asn, peer.as_path))
        for gw in world.gateways_of(rs)
        for peer in gw.onprem_peers
        for prefix in peer.prefixes
    ]


def _onprem_path(gw: Gateway, asn: int, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    # Behind ExpressRoute the MSEE (12076) sits in front of the customer edge (65020 in the write-ups).
    return f"{asn}-65020" if gw.type == "ExpressRoute" else str(asn)


def _route(
    local: str, network: str, next_hop: str | None, source: str, origin: str, as_path: str, weight: int
) -> RouteDict:
    return {
        "localAddress": local,
        "network": network,
        "nextHop": next_hop,
        "sourcePeer": source,
        "origin": origin,
        "asPath": as_path,
        "weight": weight,
    }


def _peer(local: str, neighbor: str, asn: int, routes_received: int) -> RouteDict:
    return {
        "localAddress": local,
        "neighbor": neighbor,
        "asn": asn,
        "state": "Connected",
        "connectedDuration": "01:43:19.0347253",
        "routesReceived": routes_received,
        "messagesSent": 350,
        "messagesReceived": 144,
    }


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _normalise(r: Mapping[str, object], local: str, peer_ip: str) -> RouteDict:
    """Accept lab-mode routes ARM-shaped (network/nextHop/asPath) or agent-shaped (prefix/next_hop)."""
    if "network" in r:
        out = _route(local, str(r["network"]), _opt(r.get("nextHop")), peer_ip, "EBgp", str(r.get("asPath", "")), 32768)
        out.update(r)
        return out
    return _route(local, str(r["prefix"]), _opt(r.get("next_hop")), peer_ip, "EBgp", str(r.get("as_path", "")), 32768)
