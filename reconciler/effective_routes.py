"""Effective routing of one subnet: which route Azure really uses for a destination (pure).

Owns Azure's route selection (longest prefix first; among equal prefixes User > BGP > system) and
the system routes every subnet gets. Must not know ARM, drift codes or how routes were read.

Source: "Virtual network traffic routing", Microsoft Learn
(learn.microsoft.com/azure/virtual-network/virtual-networks-udr-overview), sections "System routes"
(0.0.0.0/0 -> Internet; 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 -> None) and
"How Azure selects a route" (longest prefix match; for the same prefix: user-defined route, then
BGP route, then system route). A 0.0.0.0/0 -> Internet UDR therefore does NOT beat BGP-learned
0.0.0.0/1 + 128.0.0.0/1: both /1s are longer prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from ipaddress import IPv4Network

from reconciler.observed import EffectiveRoute, Gateway, InstanceRoutes, Observation, SubnetRouting, Unknown

DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")


class RouteSource(IntEnum):
    """Who put a route into the subnet's table; the value is the tie-break rank (higher wins)."""

    SYSTEM = 1  # ARM effectiveRoute source "Default"
    BGP = 2  # "VirtualNetworkGateway": Route Server or a gateway programmed it
    USER = 3  # "User": a UDR in the attached route table

    @property
    def arm(self) -> str:
        return {RouteSource.SYSTEM: "Default", RouteSource.BGP: "VirtualNetworkGateway", RouteSource.USER: "User"}[self]

    @classmethod
    def from_arm(cls, value: str) -> RouteSource | None:
        return {"default": cls.SYSTEM, "virtualnetworkgateway": cls.BGP, "user": cls.USER}.get(value.lower())


class HopType(StrEnum):
    """ARM's nextHopType values (routeTables and effectiveRouteTable share them)."""

    INTERNET = "Internet"
    VIRTUAL_APPLIANCE = "VirtualAppliance"
    VIRTUAL_NETWORK_GATEWAY = "VirtualNetworkGateway"
    VNET_LOCAL = "VnetLocal"
    NONE = "None"

    @classmethod
    def parse(cls, value: str) -> HopType | None:
        by_lower = {h.value.lower(): h for h in cls}
        return by_lower.get(value.lower())


@dataclass(frozen=True)
class CandidateRoute:
    """One route in a subnet's table, with where it came from (evidence for a human)."""

    prefix: IPv4Network
    source: RouteSource
    hop: HopType
    next_hop_ip: str | None = None
    origin: str = ""  # e.g. "UDR default-internet in fw-rt", "Route Server, from nva2"

    def describe(self) -> str:
        via = f" {self.next_hop_ip}" if self.next_hop_ip else ""
        return f"{self.prefix} -> {self.hop.value}{via} ({self.origin or self.source.name.lower()})"

    def delivers_to(self, hop: HopType, ip: str | None) -> bool:
        """Whether traffic on this route goes where `hop`/`ip` says.

        Route Server's routes show as nextHopType VirtualNetworkGateway with the NVA's next-hop IP
        (effective routes list them that way), yet the packet goes to that IP: to a requirement
        "VirtualAppliance <ip>" a BGP route with that next hop is the same place.
        """
        if hop == HopType.VIRTUAL_APPLIANCE:
            return ip is not None and self.next_hop_ip == ip and self.hop in (hop, HopType.VIRTUAL_NETWORK_GATEWAY)
        return self.hop == hop and (ip is None or self.next_hop_ip == ip)


# The default system routes of every subnet (udr-overview, "System routes" > "Default").
RESERVED_NONE = tuple(IPv4Network(p) for p in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
_RESERVED_KEYED = tuple((int(n.network_address), n.prefixlen) for n in RESERVED_NONE)
SYSTEM_ROUTES: tuple[CandidateRoute, ...] = (
    CandidateRoute(DEFAULT_ROUTE, RouteSource.SYSTEM, HopType.INTERNET, None, "system default route"),
    *(CandidateRoute(p, RouteSource.SYSTEM, HopType.NONE, None, "system route, reserved range") for p in RESERVED_NONE),
)


@dataclass(frozen=True)
class Decision:
    """For every destination in `prefix`, Azure uses `routes` (more than one: ECMP)."""

    prefix: IPv4Network
    routes: tuple[CandidateRoute, ...]

    @property
    def internet(self) -> bool:
        """Public destinations: outside the reserved ranges Azure routes to None by default."""
        addr, length = int(self.prefix.network_address), self.prefix.prefixlen
        return not any(_covers(net, net_length, addr, length) for net, net_length in _RESERVED_KEYED)

    def describe(self) -> str:
        return " | ".join(r.describe() for r in self.routes) if self.routes else "no route (dropped)"


def subnet_routes(subnet: SubnetRouting, bgp: Iterable[CandidateRoute]) -> tuple[CandidateRoute, ...]:
    """Everything in the subnet's table: its UDRs, BGP routes unless propagation is off, system routes."""
    udrs: list[CandidateRoute] = []
    for r in subnet.routes:
        hop = HopType.parse(r.next_hop_type)
        try:
            prefix = IPv4Network(r.prefix, strict=False)
        except ValueError:
            continue  # an unparsable UDR cannot match anything
        if hop is not None:
            origin = f"UDR {r.name} in {subnet.route_table}"
            udrs.append(CandidateRoute(prefix, RouteSource.USER, hop, r.next_hop_ip, origin))
    # disableBgpRoutePropagation: the attached table keeps BGP routes out of the subnet.
    propagate = not (subnet.route_table is not None and subnet.disable_bgp_route_propagation)
    return (*udrs, *(bgp if propagate else ()), *SYSTEM_ROUTES)


def resolve(routes: Sequence[CandidateRoute], prefix: IPv4Network = DEFAULT_ROUTE) -> tuple[Decision, ...]:
    """Split `prefix` into the largest blocks that one winning route (set) serves, in address order.

    A block is split only where a more specific route starts inside it, so the result is exact for
    every destination and small (at most ~32 blocks per route inside `prefix`).
    """
    out: list[Decision] = []
    keyed = [(int(r.prefix.network_address), r.prefix.prefixlen, r) for r in routes]
    _resolve(keyed, int(prefix.network_address), prefix.prefixlen, out)
    return tuple(out)


# A route keyed for _resolve: (network address as an int, prefix length, the route).
_Keyed = tuple[int, int, CandidateRoute]


def _covers(net: int, length: int, addr: int, addr_length: int) -> bool:
    """net/length holds addr/addr_length. Plain integers: this runs ~100 times per subnet and pass, and
    ipaddress's subnet_of/overlaps were a third of a 100-hub pass's CPU (issue #18)."""
    return length <= addr_length and (net ^ addr) >> (32 - length) == 0


def _resolve(routes: Sequence[_Keyed], addr: int, length: int, out: list[Decision]) -> None:
    """Split the block addr/length where a more specific route starts inside it, recursively."""
    if length < 32 and any(rl > length and _covers(addr, length, ra, rl) for ra, rl, _ in routes):
        for half in (addr, addr | 1 << (31 - length)):
            overlapping = [k for k in routes if _covers(k[0], k[1], half, length + 1) or
                           _covers(half, length + 1, k[0], k[1])]  # fmt: skip
            _resolve(overlapping, half, length + 1, out)
        return
    block = IPv4Network((addr, length))
    covering = [r for ra, rl, r in routes if _covers(ra, rl, addr, length)]
    if not covering:
        out.append(Decision(block, ()))
        return
    longest = max(r.prefix.prefixlen for r in covering)
    best = [r for r in covering if r.prefix.prefixlen == longest]
    rank = max(r.source for r in best)
    out.append(Decision(block, tuple(r for r in best if r.source == rank)))


Learned = Iterable[tuple[str, InstanceRoutes | Unknown]]  # (connection name, routes per instance)


def route_server_routes(learned: Learned) -> tuple[CandidateRoute, ...] | Unknown:
    """The routes Route Server programs into the VNet: what it learned from its BGP peers.

    Both instances program the same routes; one entry per (prefix, next hop). A route whose AS
    path holds 65515 is dropped by Route Server (platform rule 2), so it never reaches a subnet.
    Any unreadable peer makes the whole set unknown: a missing /1 would change the verdict.
    """
    found: dict[tuple[IPv4Network, str | None], CandidateRoute] = {}
    for conn, routes in learned:
        if isinstance(routes, Unknown):
            return routes
        for inst in sorted(routes):
            for r in routes[inst]:
                if 65515 not in r.asns:
                    _add_bgp(found, r.prefix, r.next_hop, f"BGP from Route Server, peer {conn}")
    return tuple(found.values())


def _add_bgp(
    found: dict[tuple[IPv4Network, str | None], CandidateRoute], prefix: str, next_hop: str | None, origin: str
) -> None:
    """Add one BGP-programmed route (nextHopType VirtualNetworkGateway) unless its (prefix, next hop) is
    already there; an unparsable prefix cannot match anything and is skipped."""
    try:
        net = IPv4Network(prefix, strict=False)
    except ValueError:
        return
    route = CandidateRoute(net, RouteSource.BGP, HopType.VIRTUAL_NETWORK_GATEWAY, next_hop, origin)
    found.setdefault((net, next_hop), route)


def programmed_routes(obs: Observation) -> tuple[CandidateRoute, ...] | Unknown:
    """Every BGP route in the VNet's subnets: Route Server's (from its peers) and each gateway's own
    on-premises routes (origin EBgp; the IBgp ones are Route Server's, already counted). An
    on-premises 0.0.0.0/0 (forced tunnelling) lands in AzureFirewallSubnet just like the NVA's."""
    ars = route_server_routes(sorted(obs.learned.items()))
    if isinstance(ars, Unknown):
        return ars
    found = {(r.prefix, r.next_hop_ip): r for r in ars}
    for name, gw in sorted(obs.gateways.items()):
        if not isinstance(gw, Gateway):
            continue  # gone, or its own Unknown is reported by the gateway checks
        if isinstance(gw.learned, Unknown):
            return gw.learned
        for r in gw.learned:
            if r.origin.lower() == "ebgp":
                _add_bgp(found, r.prefix, r.next_hop, f"BGP from gateway {name} (on-premises)")
    return tuple(found.values())


@dataclass(frozen=True)
class Requirement:
    """Internet destinations inside `prefix` must leave via `hop` (and `ip` for an appliance)."""

    prefix: IPv4Network
    hop: HopType
    ip: str | None = None

    def describe(self) -> str:
        return f"{self.prefix} -> {self.hop.value}" + (f" {self.ip}" if self.ip else "")


def violations(requirement: Requirement, decisions: Iterable[Decision]) -> tuple[Decision, ...]:
    """The winning routes that send part of the requirement's prefix elsewhere, one per route set.

    Each result names the route's own prefix (e.g. the 0.0.0.0/1 that beats a 0/0 UDR), not the
    many blocks the reserved ranges cut it into. Only internet destinations are judged when the
    requirement is about the internet (its prefix is not itself a reserved range): 10.0.0.0/8 etc.
    follow their own system routes by design.
    """
    judge_private = not Decision(requirement.prefix, ()).internet
    want, want_length = int(requirement.prefix.network_address), requirement.prefix.prefixlen
    bad: dict[tuple[CandidateRoute, ...], Decision] = {}
    for d in decisions:
        inside = _covers(want, want_length, int(d.prefix.network_address), d.prefix.prefixlen)
        if not inside or not (d.internet or judge_private):
            continue
        if not d.routes or not all(r.delivers_to(requirement.hop, requirement.ip) for r in d.routes):
            bad.setdefault(d.routes, Decision(d.routes[0].prefix if d.routes else d.prefix, d.routes))
    return tuple(bad.values())


def from_effective(routes: Iterable[EffectiveRoute]) -> tuple[CandidateRoute, ...]:
    """A NIC's real effectiveRouteTable as candidate routes: the Active entries (Invalid ones lost a tie).

    Next-hop types the model does not know (service endpoints, peering) carry Azure-service or VNet
    traffic, never general internet traffic: they are left out. An entry with several next-hop IPs
    (ECMP: `nextHopIpAddress` is a list) becomes one route per IP, so every path is judged.
    """
    out: list[CandidateRoute] = []
    for r in routes:
        if r.state.lower() != "active":
            continue
        hop = HopType.parse(r.next_hop_type)
        source = RouteSource.from_arm(r.source) or RouteSource.SYSTEM
        if hop is None:
            continue
        for p in r.prefixes:
            try:
                prefix = IPv4Network(p, strict=False)
            except ValueError:
                continue
            for ip in r.next_hop_ips or (None,):
                out.append(CandidateRoute(prefix, source, hop, ip, f"{r.source}, read from ARM"))
    return tuple(out)


def disagreements(real: Sequence[Decision], computed: Sequence[Decision]) -> tuple[tuple[Decision, Decision], ...]:
    """Internet blocks where two resolutions of the same prefix send traffic to different places.

    Both are piecewise constant over their blocks, so comparing at every block start of either is exact.
    """

    def where(ds: Sequence[Decision], addr: IPv4Network) -> Decision:
        return next(d for d in ds if addr.subnet_of(d.prefix))

    def target(d: Decision) -> frozenset[tuple[HopType, str | None]]:
        return frozenset((r.hop, r.next_hop_ip) for r in d.routes)

    out: dict[tuple[IPv4Network, IPv4Network], tuple[Decision, Decision]] = {}
    for d in (*real, *computed):
        if not d.internet:
            continue
        start = IPv4Network(f"{d.prefix.network_address}/32")
        a, b = where(real, start), where(computed, start)
        if target(a) != target(b):
            out.setdefault((a.prefix, b.prefix), (a, b))
    return tuple(out.values())
