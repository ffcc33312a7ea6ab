"""The ARM resource routes: which path and method is which operation, and what each one answers.

Owns the route table below `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network`
(paths case-insensitive, names URL-decoded, any api-version), request-body rules, paging, and
each operation's answer from the world. A route names the resource it needs; the server finds it
once, under the world lock, and answers ARM's 404 when it is absent, so a handler receives the
resource it works on. A handler returns a plain answer, a `RouteQuery` or an `Update`; the
long-running side lives in `operations`. Shapes live in `resources`, Azure's computations in
`derive`. It must not know HTTP serving, faults or the reconciler.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from reconciler.asn import peer_asn_problem

from . import agent, derive, resources
from .faults import Fault
from .messages import Request, Response, arm_error, json_response, not_found
from .operations import API_VERSION
from .world import BgpConnection, Firewall, Gateway, Nic, RouteServer, RouteTable, Subnet, World

R = TypeVar("R")  # the resource a route works on
P = TypeVar("P")  # what its request parses to


@dataclasses.dataclass(frozen=True)
class Site:
    """What a handler may read besides the request; the world only under its lock."""

    world: World
    sources: Mapping[str, derive.LearnedSource]  # lab mode: learned routes per peer IP
    page_size: int
    base_url: str
    location: str


@dataclasses.dataclass
class Call:
    """A routed ARM call: the request, its identity, and the fault (if any) this request drew."""

    req: Request
    site: Site
    subscription: str
    resource_group: str
    args: tuple[str, ...]  # the names the pattern captured, in path order
    op: str
    fault: Fault | None = None


@dataclasses.dataclass(frozen=True)
class RouteQuery:
    """A POST that runs as a long-running operation: its result, and its answer under an empty-instances fault."""

    result: object
    empty: object


@dataclasses.dataclass(frozen=True)
class Update:
    """A PUT: `answer` now (provisioningState Updating), `done` applied when its operation completes."""

    answer: object
    done: Callable[[], None]


Outcome = Response | RouteQuery | Update


@dataclasses.dataclass(frozen=True)
class Lookup(Generic[R]):
    """How a route finds its resource, and what it answers when there is none (ARM's 404 by default)."""

    kind: str  # ARM type path in the 404 message, e.g. "virtualHubs/bgpConnections"
    find: Callable[[World, Call], R | None]
    absent: Callable[[Call], Response] | None = None

    def missing(self, call: Call) -> Response:
        if self.absent is not None:
            return self.absent(call)
        return not_found(self.kind, "/".join(call.args[: self.kind.count("/") + 1]))


@dataclasses.dataclass(frozen=True)
class Route(Generic[R, P]):
    method: str
    pattern: tuple[str, ...]  # lower-case segments after /providers/Microsoft.Network; "*" captures a name
    op: str
    lookup: Lookup[R]
    parse: Callable[[Call], P | Response]  # request rules checked before the lookup (a 400 beats a 404)
    answer: Callable[[Call, P, R], Outcome]  # runs under the world lock with the found resource

    def run(self, call: Call) -> Outcome:
        """Parse, find the resource once under the world lock, answer."""
        parsed = self.parse(call)
        if isinstance(parsed, Response):
            return parsed
        world = call.site.world
        with world.lock:
            found = self.lookup.find(world, call)
            return self.lookup.missing(call) if found is None else self.answer(call, parsed, found)


def _nothing(call: Call) -> None:
    return None


def plain(
    method: str, pattern: tuple[str, ...], op: str, lookup: Lookup[R], answer: Callable[[Call, R], Outcome]
) -> Route[R, None]:
    """A route with no request rules of its own."""
    return Route(method, pattern, op, lookup, _nothing, lambda call, _none, found: answer(call, found))


# ---- lookups ---------------------------------------------------------------------------------------


def _connection(w: World, c: Call) -> tuple[RouteServer, BgpConnection] | None:
    rs = w.find_route_server(c.subscription, c.resource_group, c.args[0])
    conn = rs.connection(c.args[1]) if rs is not None else None
    return None if rs is None or conn is None else (rs, conn)


def _nic(w: World, c: Call) -> tuple[Nic, Subnet] | None:
    nic = w.find_nic(c.subscription, c.resource_group, c.args[0])
    sn = None if nic is None else w.find_subnet(nic.subscription, nic.resource_group, nic.vnet, nic.subnet)
    return None if nic is None or sn is None else (nic, sn)


def _vnet(w: World, c: Call) -> list[Subnet] | None:
    # The world has no VNet object: a VNet exists while one of its subnets does.
    subnets = [
        sn
        for sn in w.subnets
        if sn.subscription.lower() == c.subscription.lower()
        and sn.resource_group.lower() == c.resource_group.lower()
        and sn.vnet.lower() == c.args[0].lower()
    ]
    return subnets or None


HUB = Lookup[RouteServer]("virtualHubs", lambda w, c: w.find_route_server(c.subscription, c.resource_group, c.args[0]))
CONNECTION = Lookup[tuple[RouteServer, BgpConnection]]("virtualHubs/bgpConnections", _connection)
# DELETE of an absent connection is ARM's 204 No Content, not a 404.
CONNECTION_TO_DELETE = dataclasses.replace(CONNECTION, absent=lambda c: Response(204))
GATEWAY = Lookup[Gateway](
    "virtualNetworkGateways", lambda w, c: w.find_gateway(c.subscription, c.resource_group, c.args[0])
)
FIREWALL = Lookup[Firewall]("azureFirewalls", lambda w, c: w.find_firewall(c.subscription, c.resource_group, c.args[0]))
ROUTE_TABLE = Lookup[RouteTable](
    "routeTables", lambda w, c: w.find_route_table(c.subscription, c.resource_group, c.args[0])
)
SUBNET = Lookup[Subnet](
    "virtualNetworks/subnets", lambda w, c: w.find_subnet(c.subscription, c.resource_group, c.args[0], c.args[1])
)
VNET = Lookup[list[Subnet]]("virtualNetworks", _vnet)
NIC = Lookup[tuple[Nic, Subnet]]("networkInterfaces", _nic)


# ---- request rules -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubChange:
    branch_to_branch: bool
    routing_preference: str
    min_capacity: int


def _hub_change(c: Call) -> HubChange | Response:
    """A PUT replaces the hub with the body (ARM semantics, not a merge): what it leaves out takes its default."""
    try:
        body = c.req.json_body()
    except ValueError:
        return arm_error(400, "InvalidRequestFormat", "The request body is not valid JSON.")
    if not isinstance(body, dict) or not isinstance(body.get("location"), str):
        return arm_error(400, "LocationRequired", "The location property is required for this definition.")
    props = body.get("properties", {})
    if not isinstance(props, dict):
        return arm_error(400, "InvalidRequestFormat", "Expected a virtualHub with 'properties'.")
    # hubRoutingPreference: the spec's HubRoutingPreference enum (ExpressRoute, VpnGateway, ASPath),
    # default ExpressRoute. minCapacity: "Azure Route Server capacity" (Microsoft Learn) gives the
    # default of two routing infrastructure units; the upper bound 50 was not found for Route Server.
    b2b = props.get("allowBranchToBranchTraffic", False)
    pref = props.get("hubRoutingPreference", "ExpressRoute")
    scale = props.get("virtualRouterAutoScaleConfiguration") or {}
    capacity = scale.get("minCapacity", 2) if isinstance(scale, dict) else None
    if not isinstance(b2b, bool) or pref not in ("ExpressRoute", "VpnGateway", "ASPath"):
        return arm_error(400, "InvalidRequestFormat", "allowBranchToBranchTraffic/hubRoutingPreference")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 2 <= capacity <= 50:
        return arm_error(400, "InvalidRequestFormat", "virtualRouterAutoScaleConfiguration.minCapacity")
    return HubChange(b2b, pref, capacity)


@dataclasses.dataclass(frozen=True)
class Peer:
    ip: str
    asn: int


def _peer(c: Call) -> Peer | Response:
    try:
        body = c.req.json_body()
    except ValueError:
        return arm_error(400, "InvalidRequestFormat", "The request body is not valid JSON.")
    props = body.get("properties") if isinstance(body, dict) else None
    peer_ip = props.get("peerIp") if isinstance(props, dict) else None
    peer_asn = props.get("peerAsn") if isinstance(props, dict) else None
    if not isinstance(peer_ip, str) or not _is_ip(peer_ip):
        return arm_error(400, "InvalidRequestFormat", "properties.peerIp must be an IP address.")
    if isinstance(peer_asn, bool) or not isinstance(peer_asn, int):
        return arm_error(400, "InvalidRequestFormat", "properties.peerAsn must be an ASN.")
    # Route Server takes only 16-bit ASNs outside the reserved ranges (reconciler.asn, from the
    # Route Server FAQ). Azure's exact error code for this case is not documented; 400 is.
    problem = peer_asn_problem(peer_asn)
    if problem is not None:
        return arm_error(400, "InvalidRequestFormat", f"properties.peerAsn: {problem}.")
    return Peer(peer_ip, peer_asn)


def _skiptoken(c: Call) -> int | Response:
    try:
        return int(c.req.query.get("$skiptoken", "0"))
    except ValueError:
        return arm_error(400, "InvalidSkipToken", "Bad $skiptoken.")


def _required_peer(c: Call) -> str | Response:
    peer = c.req.query.get("peer")
    if not peer:
        return arm_error(400, "MissingRequiredParameter", "The 'peer' query parameter is required.")
    return peer


# ---- answers (under the world lock) ------------------------------------------------------------------


def _hub_put(c: Call, change: HubChange, rs: RouteServer) -> Outcome:
    """`If-Match` is honoured: 412 when the hub changed since the client read it (GET, change, PUT)."""
    match = c.req.headers.get("if-match")
    if match is not None and match.strip() not in ("*", resources.hub_etag(rs)):
        return arm_error(412, "PreconditionFailed", f"The ETag {match!r} does not match the hub's current ETag.")
    rs.branch_to_branch, rs.routing_preference, rs.min_capacity = (
        change.branch_to_branch, change.routing_preference, change.min_capacity
    )  # fmt: skip
    rs.generation += 1
    rs.provisioning_state = "Updating"

    def done() -> None:
        rs.provisioning_state = "Succeeded"

    return Update(resources.hub_json(rs), done)


def _bgp_list(c: Call, start: int, rs: RouteServer) -> Outcome:
    size = c.site.page_size
    page = rs.connections[start : start + size]
    payload: dict[str, object] = {"value": [resources.connection_json(rs, x) for x in page]}
    if start + size < len(rs.connections):
        version = c.req.query.get("api-version", API_VERSION)
        payload["nextLink"] = f"{c.site.base_url}{c.req.raw_path}?api-version={version}&$skiptoken={start + size}"
    return json_response(200, payload)


def _bgp_put(c: Call, peer: Peer, rs: RouteServer) -> Outcome:
    # The emulator does not create Route Servers (the lookup answers 404); connections it creates.
    conn = rs.connection(c.args[1])
    if conn is None:
        conn = BgpConnection(c.args[1], peer.ip, peer.asn)
        rs.connections.append(conn)
    conn.peer_ip, conn.peer_asn = peer.ip, peer.asn
    # The session comes up on the instances the NVA (if any) is configured to peer with.
    world = c.site.world
    nva = world.find_nva(peer.ip)
    configured = {n.ip for n in agent.configured_neighbors(world, nva)} if nva else set()
    conn.connected_instances = [i for i, ip in enumerate(rs.ips) if nva and ip in configured]
    conn.provisioning_state = "Updating"

    def done() -> None:
        conn.provisioning_state = "Succeeded"

    return Update(resources.connection_json(rs, conn), done)


def _bgp_delete(c: Call, found: tuple[RouteServer, BgpConnection]) -> Outcome:
    rs, conn = found
    rs.connections.remove(conn)
    return Response(200)


def _routes_learned(c: Call, found: tuple[RouteServer, BgpConnection]) -> Outcome:
    rs, conn = found
    result: dict[str, object] = dict(derive.learned_routes(c.site.world, rs, conn, c.site.sources))
    if rs.learned_value_null:
        result["value"] = None
    return RouteQuery(result, {})


def _routes_advertised(c: Call, found: tuple[RouteServer, BgpConnection]) -> Outcome:
    rs, conn = found
    return RouteQuery(derive.advertised_routes(c.site.world, rs, conn), {})


def _gateway_learned(c: Call, gw: Gateway) -> Outcome:
    return RouteQuery({"value": derive.gateway_learned(c.site.world, gw, c.site.sources)}, {"value": []})


def _gateway_advertised(c: Call, peer: str, gw: Gateway) -> Outcome:
    routes = derive.gateway_advertised(c.site.world, gw, peer, c.site.sources)
    if routes is None:
        return arm_error(400, "InvalidBgpPeerIp", f"'{peer}' is not a BGP peer of gateway '{c.args[0]}'.")
    return RouteQuery({"value": routes}, {"value": []})


def _gateway_peers(c: Call, gw: Gateway) -> Outcome:
    peers = derive.gateway_peers(c.site.world, gw, c.site.sources)
    peer = c.req.query.get("peer")
    if peer:
        peers = [p for p in peers if p["neighbor"] == peer]
    return RouteQuery({"value": peers}, {"value": []})


def _firewall_metrics(c: Call, fw: Firewall) -> Outcome:
    names = {n.strip().lower() for n in c.req.query.get("metricnames", "").split(",")}
    return json_response(200, resources.firewall_metrics_json(fw, "firewallhealth" in names, time.time()))


def _nic_routes(c: Call, found: tuple[Nic, Subnet]) -> Outcome:
    # POST .../networkInterfaces/{nic}/effectiveRouteTable: 200 or 202 then the EffectiveRouteListResult
    # (NetworkInterfaceEffectiveRouteTableList.json in azure-rest-api-specs).
    _nic, sn = found
    return RouteQuery({"value": derive.effective_routes(c.site.world, sn, c.site.sources)}, {"value": []})


def _vnet_get(c: Call, subnets: list[Subnet]) -> Outcome:
    # ARM returns the subnets inline (routeTable ids included), which is why one GET can replace a
    # subnet.get each.
    vnet = subnets[0].vnet
    space = ipaddress.collapse_addresses(ipaddress.IPv4Network(sn.address_prefix, strict=False) for sn in subnets)
    return json_response(
        200,
        {
            "id": f"{resources.group_id(c.subscription, c.resource_group)}/virtualNetworks/{vnet}",
            "name": vnet,
            "type": "Microsoft.Network/virtualNetworks",
            "location": c.site.location,
            "properties": {
                "provisioningState": "Succeeded",
                "addressSpace": {"addressPrefixes": [str(n) for n in space]},
                "subnets": [resources.subnet_json(sn) for sn in subnets],
            },
        },
    )


def _json_of(shape: Callable[[R], object]) -> Callable[[Call, R], Outcome]:
    """A plain GET: 200 with the resource's ARM shape."""
    return lambda c, found: json_response(200, shape(found))


_HUB, _CONN, _GW = ("virtualhubs", "*"), ("virtualhubs", "*", "bgpconnections", "*"), ("virtualnetworkgateways", "*")
_FW_METRICS = ("azurefirewalls", "*", "providers", "microsoft.insights", "metrics")

ROUTES: tuple[Route[Any, Any], ...] = (
    plain("GET", _HUB, "hub.get", HUB, _json_of(resources.hub_json)),
    Route("PUT", _HUB, "hub.put", HUB, _hub_change, _hub_put),
    plain("GET", (*_HUB, "ipconfigurations"), "hub.ipconfigs", HUB,
         lambda c, rs: json_response(200, {"value": [resources.hub_ip_configuration_json(rs)]})),
    Route("GET", (*_HUB, "bgpconnections"), "bgp.list", HUB, _skiptoken, _bgp_list),
    plain("GET", _CONN, "bgp.get", CONNECTION, lambda c, f: json_response(200, resources.connection_json(*f))),
    Route("PUT", _CONN, "bgp.put", HUB, _peer, _bgp_put),
    plain("DELETE", _CONN, "bgp.delete", CONNECTION_TO_DELETE, _bgp_delete),
    plain("POST", (*_CONN, "learnedroutes"), "routes.learned", CONNECTION, _routes_learned),
    plain("POST", (*_CONN, "advertisedroutes"), "routes.advertised", CONNECTION, _routes_advertised),
    plain("GET", _GW, "gateway.get", GATEWAY, _json_of(resources.gateway_json)),
    plain("POST", (*_GW, "getlearnedroutes"), "gateway.learned", GATEWAY, _gateway_learned),
    Route("POST", (*_GW, "getadvertisedroutes"), "gateway.advertised", GATEWAY, _required_peer, _gateway_advertised),
    plain("POST", (*_GW, "getbgppeerstatus"), "gateway.peers", GATEWAY, _gateway_peers),
    plain("GET", ("azurefirewalls", "*"), "firewall.get", FIREWALL, _json_of(resources.firewall_json)),
    plain("GET", _FW_METRICS, "firewall.health", FIREWALL, _firewall_metrics),
    plain("GET", ("routetables", "*"), "routetable.get", ROUTE_TABLE,
         lambda c, rt: json_response(200, resources.route_table_json(c.site.world, rt))),
    plain("GET", ("virtualnetworks", "*", "subnets", "*"), "subnet.get", SUBNET, _json_of(resources.subnet_json)),
    plain("GET", ("virtualnetworks", "*"), "vnet.get", VNET, _vnet_get),
    plain("POST", ("networkinterfaces", "*", "effectiveroutetable"), "nic.routes", NIC, _nic_routes),
)  # fmt: skip


def match(req: Request) -> tuple[Route[Any, Any], str, tuple[str, ...]] | Response:
    """The route for a resource path, its resource group and captured names; else ARM's 404 or 405."""
    low = req.lower
    if len(low) < 8 or low[2] != "resourcegroups" or low[4:6] != ("providers", "microsoft.network"):
        return arm_error(404, "InvalidResourceType", f"No route for {req.path}")
    tail, tail_low = req.segments[6:], low[6:]
    path_known = False
    for route in ROUTES:
        args = _capture(route.pattern, tail, tail_low)
        if args is None:
            continue
        if route.method == req.method:
            return route, req.segments[3], args
        path_known = True
    if path_known:
        return arm_error(405, "MethodNotAllowed", f"{req.method} is not allowed on {req.path}")
    return arm_error(404, "InvalidResourceType", f"No route for {req.path}")


def _capture(pattern: tuple[str, ...], segs: tuple[str, ...], low: tuple[str, ...]) -> tuple[str, ...] | None:
    if len(pattern) != len(low):
        return None
    args: list[str] = []
    for p, s, s_low in zip(pattern, segs, low, strict=True):
        if p == "*":
            args.append(s)
        elif p != s_low:
            return None
    return tuple(args)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
