"""Observed state of one target, as plain frozen values translated from ARM and the NVA agents.

Owns the distinction between *absent* (`None`: ARM said 404) and *unknown* (`Unknown`: the read
failed). Must not know the SDK, HTTP or how drift is judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Unknown:
    """A read that failed: the state behind it is not known and nothing may be planned from it."""

    operation: str  # e.g. "routes.learned"
    resource: str  # e.g. "nva1"
    reason: str  # short, safe to show (no secrets)


@dataclass(frozen=True)
class Hub:
    provisioning_state: str
    routing_state: str
    asn: int | None
    ips: tuple[str, ...]
    branch_to_branch: bool
    routing_preference: str | None


@dataclass(frozen=True)
class Connection:
    """A Route Server bgpConnection."""

    name: str
    peer_ip: str
    peer_asn: int | None
    provisioning_state: str
    connection_state: str


@dataclass(frozen=True)
class Route:
    prefix: str
    next_hop: str | None
    as_path: str
    origin: str = ""
    source_peer: str = ""
    local_address: str | None = None  # the ARS instance IP (Route Server) or gateway IP that holds it

    @property
    def asns(self) -> tuple[int, ...]:
        """AS path as numbers; ARM separates with '-', FRR with ' '."""
        parts = self.as_path.replace("-", " ").replace(",", " ").split()
        return tuple(int(p) for p in parts if p.isdigit())


# Route Server routes are keyed by instance: "RouteServiceRole_IN_0" / "RouteServiceRole_IN_1".
InstanceRoutes = Mapping[str, tuple[Route, ...]]


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway resource itself (read for VPN gateways: Route Server needs them active-active)."""

    gateway_type: str
    active_active: bool
    provisioning_state: str


@dataclass(frozen=True)
class Gateway:
    """What a gateway learned from Route Server and advertises to each on-premises peer (by IP)."""

    name: str
    learned: tuple[Route, ...] | Unknown
    advertised: Mapping[str, tuple[Route, ...] | Unknown]
    config: GatewayConfig | Unknown | None = None  # None: not read (ExpressRoute gateways)


@dataclass(frozen=True)
class Firewall:
    name: str
    provisioning_state: str
    private_ip: str | None  # None: deallocated


class HealthStatus(StrEnum):
    """The Status dimension of Azure Firewall's FirewallHealth metric (Azure Firewall metrics docs)."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"  # a data point without the Status dimension: not judged


@dataclass(frozen=True)
class FirewallHealth:
    """The newest FirewallHealth data point: status, its Reason dimension and the percentage."""

    status: HealthStatus
    reason: str
    percent: float


@dataclass(frozen=True)
class RouteEntry:
    name: str
    prefix: str
    next_hop_type: str
    next_hop_ip: str | None


@dataclass(frozen=True)
class SubnetRouting:
    """A subnet and the route table attached to it (None when none is attached)."""

    vnet: str
    subnet: str
    route_table: str | None
    routes: tuple[RouteEntry, ...]
    disable_bgp_route_propagation: bool | None


@dataclass(frozen=True)
class EffectiveRoute:
    """One entry of a NIC's effectiveRouteTable (ARM computes it: UDRs, BGP and system routes)."""

    prefixes: tuple[str, ...]
    source: str  # "Default" | "User" | "VirtualNetworkGateway" | "Unknown"
    state: str  # "Active" | "Invalid"
    next_hop_type: str
    next_hop_ips: tuple[str, ...]


@dataclass(frozen=True)
class AgentNeighborView:
    ip: str
    remote_asn: int | None
    state: str
    advertised: tuple[Route, ...]
    uptime_ms: int = 0  # how long the session has been in `state` (0 when not up)


@dataclass(frozen=True)
class AgentView:
    """What the NVA itself says it does (from its agent)."""

    local_asn: int | None
    config_hash: str
    neighbors: tuple[AgentNeighborView, ...]
    router_id: str | None = None

    def neighbor(self, ip: str) -> AgentNeighborView | None:
        return next((n for n in self.neighbors if n.ip == ip), None)


@dataclass(frozen=True)
class Observation:
    """Everything read for one target in one pass."""

    target: str
    hub: Hub | Unknown | None
    connections: tuple[Connection, ...] | Unknown
    learned: Mapping[str, InstanceRoutes | Unknown] = field(default_factory=dict)  # by connection name
    gateways: Mapping[str, Gateway | Unknown | None] = field(default_factory=dict)  # by gateway name
    firewall: Firewall | Unknown | None = None
    firewall_ip: str | None = None  # the next hop the routes must carry, resolved from firewall or fixed
    firewall_health: FirewallHealth | Unknown | None = None  # None: not read, or the metric has no data
    subnets: Mapping[str, SubnetRouting | Unknown | None] = field(default_factory=dict)  # by "vnet:subnet"
    agents: Mapping[str, AgentView | Unknown] = field(default_factory=dict)  # by peer name
    nics: Mapping[str, tuple[EffectiveRoute, ...] | Unknown | None] = field(default_factory=dict)  # by probe NIC

    def unknowns(self) -> list[Unknown]:
        found: list[Unknown] = []
        for value in (self.hub, self.connections, self.firewall, self.firewall_health):
            if isinstance(value, Unknown):
                found.append(value)
        for mapping in (self.learned, self.gateways, self.subnets, self.agents, self.nics):
            found.extend(v for v in mapping.values() if isinstance(v, Unknown))
        for gw in self.gateways.values():
            if isinstance(gw, Gateway):
                for part in (gw.learned, *gw.advertised.values(), gw.config):
                    if isinstance(part, Unknown):
                        found.append(part)
        return found
