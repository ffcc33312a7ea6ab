"""The emulator's world model: the Azure resources and NVAs it pretends to be, as plain mutable dataclasses.

Owns the flat YAML/JSON format (load, validate, dump) and lookups by ARM identity. It stores only
configuration-like facts (what exists, what each NVA announces, which ARS instances are connected);
everything Azure would compute (learned/advertised routes, connection state) lives in `derive`.
It must not know HTTP, ARM JSON shapes or faults.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args, get_type_hints

import yaml

from reconciler.asn import ARS_ASN as ARS_ASN  # re-exported for derive
from reconciler.asn import peer_asn_problem

SUCCEEDED = "Succeeded"

FirewallKind = Literal["vnet", "vwan"]
GatewayType = Literal["ExpressRoute", "Vpn"]
# How a long-running operation answers its first 202 (notes §5): with Location only, with
# Azure-AsyncOperation only (what Microsoft's examples for the route-query POSTs show), or both.
# "status-properties" is Azure-AsyncOperation only with the result in the final status body's
# optional `properties` (azure-resource-manager-rpc, Addendum "Operation resource format").
LroStyle = Literal["location", "azure-async-operation", "both", "status-properties"]
FirewallHealthStatus = Literal["Healthy", "Degraded", "Unhealthy"]


class WorldError(ValueError):
    """The world document is malformed; the message names the path inside the document."""


@dataclasses.dataclass
class Announcement:
    """One route an NVA sends to its BGP neighbors."""

    prefix: str
    next_hop: str
    as_path: str = ""


@dataclasses.dataclass
class NvaNeighbor:
    """A BGP neighbor configured on an NVA (normally one per ARS instance)."""

    ip: str
    asn: int = ARS_ASN


@dataclasses.dataclass
class AgentPolicy:
    """The NVA agent's local policy file (nva_agent.policy, same fields): what an intent may ask for."""

    neighbors: list[NvaNeighbor]
    prefixes: list[str]
    next_hops: list[str]
    local_asn: int | None = None


@dataclasses.dataclass
class Nva:
    """An FRR NVA, keyed by its IP. `neighbors` None = peers with every ARS that has a connection to it."""

    ip: str
    asn: int
    announcements: list[Announcement] = dataclasses.field(default_factory=list)
    agent_token: str = ""
    # The outbound route-map that drops AS paths containing 65515; a broken route-map edit sets this False.
    out_filter: bool = True
    neighbors: list[NvaNeighbor] | None = None
    # The emulated agent's policy file; None = like the real agent's --lab (only the built-in rules).
    agent_policy: AgentPolicy | None = None


@dataclasses.dataclass
class BgpConnection:
    """A Route Server bgpConnection plus the emulator-only fact of which ARS instances have the session up."""

    name: str
    peer_ip: str
    peer_asn: int
    provisioning_state: str = SUCCEEDED
    connected_instances: list[int] = dataclasses.field(default_factory=lambda: [0, 1])


@dataclasses.dataclass
class RouteServer:
    """An Azure Route Server (a virtualHub of kind RouteServer) and its BGP connections."""

    subscription: str
    resource_group: str
    name: str
    asn: int = ARS_ASN
    ips: list[str] = dataclasses.field(default_factory=lambda: ["10.0.2.4", "10.0.2.5"])
    branch_to_branch: bool = True
    provisioning_state: str = SUCCEEDED
    routing_state: str = "Provisioned"
    routing_preference: str = "ExpressRoute"
    # The hub VNet's address space: ARS advertises it to every NVA.
    hub_prefix: str = "10.0.0.0/16"
    location: str = "westeurope"
    connections: list[BgpConnection] = dataclasses.field(default_factory=list)
    min_capacity: int = 2  # virtualRouterAutoScaleConfiguration.minCapacity (routing infrastructure units)
    generation: int = 1  # bumped by every PUT; the ETag is W/"<generation>"
    # Published `az` output carries `"value": null` beside the instance keys of learned routes.
    learned_value_null: bool = False
    # Published output names the instance on the higher address RouteServiceRole_IN_0.
    instances_reversed: bool = False

    def connection(self, name: str) -> BgpConnection | None:
        return next((c for c in self.connections if c.name.lower() == name.lower()), None)


@dataclasses.dataclass
class OnPremPeer:
    """An on-premises BGP peer of a gateway (MSEE for ExpressRoute, branch device for VPN)."""

    ip: str
    asn: int
    prefixes: list[str] = dataclasses.field(default_factory=list)
    # None = the usual shape: "<asn>-65020" behind ExpressRoute, "<asn>" behind VPN.
    as_path: str | None = None


@dataclasses.dataclass
class Gateway:
    """A virtual network gateway that peers (iBGP) with a Route Server in the same resource group."""

    subscription: str
    resource_group: str
    name: str
    type: GatewayType = "ExpressRoute"
    route_server: str | None = None
    ips: list[str] = dataclasses.field(default_factory=lambda: ["10.0.0.4", "10.0.0.5"])
    provisioning_state: str = SUCCEEDED
    location: str = "westeurope"
    onprem_peers: list[OnPremPeer] = dataclasses.field(default_factory=list)
    # None: the usual (a VPN gateway with two IPs is active-active; ExpressRoute never is).
    active_active: bool | None = None


@dataclasses.dataclass
class Firewall:
    """An Azure Firewall. private_ip None means deallocated (no IP configuration)."""

    subscription: str
    resource_group: str
    name: str
    kind: FirewallKind = "vnet"
    private_ip: str | None = None
    provisioning_state: str = SUCCEEDED
    vnet: str = "hub-vnet"
    virtual_hub: str | None = None
    location: str = "westeurope"
    # The FirewallHealth metric (Azure Monitor) and its Reason dimension, e.g. Degraded / "SNAT port".
    health: FirewallHealthStatus = "Healthy"
    health_reason: str = ""


@dataclasses.dataclass
class Route:
    """A user-defined route in a route table."""

    name: str
    prefix: str
    next_hop_type: str
    next_hop_ip: str | None = None


@dataclasses.dataclass
class RouteTable:
    subscription: str
    resource_group: str
    name: str
    disable_bgp_route_propagation: bool = False
    routes: list[Route] = dataclasses.field(default_factory=list)
    location: str = "westeurope"


@dataclasses.dataclass
class Subnet:
    """A subnet; route_table names a route table in the same subscription and resource group."""

    subscription: str
    resource_group: str
    vnet: str
    name: str
    address_prefix: str
    route_table: str | None = None


@dataclasses.dataclass
class Nic:
    """A VM's network interface in a subnet: ARM answers its effectiveRouteTable from that subnet's routes."""

    subscription: str
    resource_group: str
    name: str
    vnet: str
    subnet: str


@dataclasses.dataclass
class OperationLroStyle:
    """The LRO style of one operation (e.g. "routes.learned"), overriding the world's."""

    op: str
    style: LroStyle
    subscription: str | None = None  # only this subscription's requests (None: every one)


T = TypeVar("T")


def _same(a: str, b: str) -> bool:
    # ARM resource identities are case-insensitive.
    return a.lower() == b.lower()


@dataclasses.dataclass
class World:
    """Everything the emulator serves. Mutate from other threads under `lock` (or by single assignments)."""

    route_servers: list[RouteServer] = dataclasses.field(default_factory=list)
    nvas: list[Nva] = dataclasses.field(default_factory=list)
    gateways: list[Gateway] = dataclasses.field(default_factory=list)
    firewalls: list[Firewall] = dataclasses.field(default_factory=list)
    subnets: list[Subnet] = dataclasses.field(default_factory=list)
    route_tables: list[RouteTable] = dataclasses.field(default_factory=list)
    nics: list[Nic] = dataclasses.field(default_factory=list)
    # LRO answer style for every operation (None: the emulator's default), and per operation name.
    lro_style: LroStyle | None = None
    lro_styles: list[OperationLroStyle] = dataclasses.field(default_factory=list)
    lock: threading.RLock = dataclasses.field(
        default_factory=threading.RLock, repr=False, compare=False, metadata={"internal": True}
    )

    # ---- loading -------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> World:
        """Read a world from a .yaml/.yml or .json file."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise WorldError(f"{p}: not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
        try:
            return cls.from_dict(data or {})
        except WorldError as exc:
            raise WorldError(f"{p}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> World:
        world = _build(cls, data, "$")
        world.validate()
        return world

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "lock"}

    def copy(self) -> World:
        """A deep, independent copy (with its own lock)."""
        with self.lock:
            return World.from_dict(copy.deepcopy(self.to_dict()))

    def validate(self) -> None:
        """Check addresses and cross-references so a typo fails at load, not as a puzzling 404 later."""
        for i, rs in enumerate(self.route_servers):
            where = f"$.route_servers[{i}]"
            for ip in rs.ips:
                _check_ip(ip, f"{where}.ips")
            _check_prefix(rs.hub_prefix, f"{where}.hub_prefix")
            for j, c in enumerate(rs.connections):
                _check_ip(c.peer_ip, f"{where}.connections[{j}].peer_ip")
                _check_peer_asn(c.peer_asn, f"{where}.connections[{j}].peer_asn")
                for inst in c.connected_instances:
                    if not 0 <= inst < len(rs.ips):
                        raise WorldError(f"{where}.connections[{j}].connected_instances: no instance {inst}")
        for i, nva in enumerate(self.nvas):
            _check_ip(nva.ip, f"$.nvas[{i}].ip")
            _check_peer_asn(nva.asn, f"$.nvas[{i}].asn")
            for j, a in enumerate(nva.announcements):
                _check_prefix(a.prefix, f"$.nvas[{i}].announcements[{j}].prefix")
                _check_ip(a.next_hop, f"$.nvas[{i}].announcements[{j}].next_hop")
        for i, gw in enumerate(self.gateways):
            if gw.route_server and self.find_route_server(gw.subscription, gw.resource_group, gw.route_server) is None:
                raise WorldError(f"$.gateways[{i}].route_server: no route server {gw.route_server!r} in the same group")
            for j, peer in enumerate(gw.onprem_peers):
                _check_ip(peer.ip, f"$.gateways[{i}].onprem_peers[{j}].ip")
                for p in peer.prefixes:
                    _check_prefix(p, f"$.gateways[{i}].onprem_peers[{j}].prefixes")
        for i, nic in enumerate(self.nics):
            if self.find_subnet(nic.subscription, nic.resource_group, nic.vnet, nic.subnet) is None:
                raise WorldError(f"$.nics[{i}]: no subnet {nic.vnet}/{nic.subnet} in the same group")
        for i, sn in enumerate(self.subnets):
            if sn.route_table and self.find_route_table(sn.subscription, sn.resource_group, sn.route_table) is None:
                raise WorldError(f"$.subnets[{i}].route_table: no route table {sn.route_table!r} in the same group")

    # ---- lookups (find_* → None when absent; the plain names raise KeyError, handy in tests) ----------

    def find_route_server(self, subscription: str, resource_group: str, name: str) -> RouteServer | None:
        return _find(self.route_servers, subscription, resource_group, name)

    def route_server(self, subscription: str, resource_group: str, name: str) -> RouteServer:
        return _must(self.find_route_server(subscription, resource_group, name), "route server", name)

    def find_gateway(self, subscription: str, resource_group: str, name: str) -> Gateway | None:
        return _find(self.gateways, subscription, resource_group, name)

    def gateway(self, subscription: str, resource_group: str, name: str) -> Gateway:
        return _must(self.find_gateway(subscription, resource_group, name), "gateway", name)

    def find_firewall(self, subscription: str, resource_group: str, name: str) -> Firewall | None:
        return _find(self.firewalls, subscription, resource_group, name)

    def firewall(self, subscription: str, resource_group: str, name: str) -> Firewall:
        return _must(self.find_firewall(subscription, resource_group, name), "firewall", name)

    def find_route_table(self, subscription: str, resource_group: str, name: str) -> RouteTable | None:
        return _find(self.route_tables, subscription, resource_group, name)

    def route_table(self, subscription: str, resource_group: str, name: str) -> RouteTable:
        return _must(self.find_route_table(subscription, resource_group, name), "route table", name)

    def find_subnet(self, subscription: str, resource_group: str, vnet: str, name: str) -> Subnet | None:
        return next(
            (
                s
                for s in self.subnets
                if _same(s.subscription, subscription)
                and _same(s.resource_group, resource_group)
                and _same(s.vnet, vnet)
                and _same(s.name, name)
            ),
            None,
        )

    def subnet(self, subscription: str, resource_group: str, vnet: str, name: str) -> Subnet:
        return _must(self.find_subnet(subscription, resource_group, vnet, name), "subnet", name)

    def find_nic(self, subscription: str, resource_group: str, name: str) -> Nic | None:
        return _find(self.nics, subscription, resource_group, name)

    def find_nva(self, ip: str) -> Nva | None:
        return next((n for n in self.nvas if n.ip == ip), None)

    def nva(self, ip: str) -> Nva:
        return _must(self.find_nva(ip), "NVA", ip)

    def connections_to(self, peer_ip: str) -> Iterator[tuple[RouteServer, BgpConnection]]:
        """Every (route server, bgpConnection) whose peer IP is `peer_ip`."""
        for rs in self.route_servers:
            for c in rs.connections:
                if c.peer_ip == peer_ip:
                    yield rs, c

    def gateways_of(self, rs: RouteServer) -> list[Gateway]:
        return [
            g
            for g in self.gateways
            if g.route_server is not None
            and _same(g.subscription, rs.subscription)
            and _same(g.resource_group, rs.resource_group)
            and _same(g.route_server, rs.name)
        ]

    def subnets_using(self, rt: RouteTable) -> list[Subnet]:
        return [
            s
            for s in self.subnets
            if s.route_table is not None
            and _same(s.subscription, rt.subscription)
            and _same(s.resource_group, rt.resource_group)
            and _same(s.route_table, rt.name)
        ]


class _Identified:
    subscription: str
    resource_group: str
    name: str


def _find(items: list[T], subscription: str, resource_group: str, name: str) -> T | None:
    for item in items:
        it = cast(_Identified, item)
        if _same(it.subscription, subscription) and _same(it.resource_group, resource_group) and _same(it.name, name):
            return item
    return None


def _must(item: T | None, what: str, name: str) -> T:
    if item is None:
        raise KeyError(f"no {what} {name!r} in the world")
    return item


def _check_ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise WorldError(f"{where}: {value!r} is not an IP address") from exc


def _check_peer_asn(value: int, where: str) -> None:
    """Azure refuses a bgpConnection (and an NVA cannot peer) with a 32-bit or reserved ASN."""
    problem = peer_asn_problem(value)
    if problem is not None:
        raise WorldError(f"{where}: {problem}")


def _check_prefix(value: str, where: str) -> None:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise WorldError(f"{where}: {value!r} is not a CIDR prefix") from exc


# ---- a tiny typed dataclass builder: readable errors, no extra dependency ------------------------------


def _build(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, Mapping):
        raise WorldError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls)) if not f.metadata.get("internal")}
    unknown = set(data) - set(fields)
    if unknown:
        raise WorldError(f"{where}: unknown field(s) {sorted(unknown)}; expected some of {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WorldError(f"{where}: missing required field {name!r}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = getattr(tp, "__origin__", None)
    args = get_args(tp)
    if origin is Literal:
        if value not in args:
            raise WorldError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if args and type(None) in args:  # X | None
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise WorldError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(cast(type[Any], tp), value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise WorldError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WorldError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        # YAML turns an unquoted `as_path: 65001` into an int; the text is what is meant.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise WorldError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise WorldError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover - a model bug


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value
