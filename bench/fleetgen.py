"""Generated fleets for the benchmark: an emulator world and the matching desired state for N hubs.

Owns the shape of one benchmark hub (the reference lab with two NVA peers) and how N of them are
spread over subscriptions. Deterministic: the same N always gives the same fleet, so the emulator
process and the reconciler process can each build it without passing it around.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

SUBSCRIPTIONS = 10
PEERS = 2
BLOCK = 4096  # each hub gets its own /20 out of 10.0.0.0/8, so NVA IPs (the emulator's NVA key) are unique


@dataclass(frozen=True)
class Hub:
    """Addresses and names of hub `index` in the fleet."""

    index: int
    subscriptions: int = SUBSCRIPTIONS

    def _ip(self, offset: int) -> str:
        return str(ipaddress.IPv4Address("10.0.0.0") + self.index * BLOCK + offset)

    @property
    def name(self) -> str:
        return f"hub-{self.index:04d}"

    @property
    def subscription(self) -> str:
        # Round-robin, so every subscription carries the same share of a pass at every moment.
        return f"sub-{self.index % self.subscriptions:02d}"

    @property
    def resource_group(self) -> str:
        return f"rg-{self.name}"

    @property
    def prefix(self) -> str:
        return f"{self._ip(0)}/20"

    def subnet(self, third: int, length: int) -> str:
        return f"{self._ip(third * 256)}/{length}"

    @property
    def ars_ips(self) -> list[str]:
        return [self._ip(2 * 256 + 4), self._ip(2 * 256 + 5)]

    @property
    def gateway_ips(self) -> list[str]:
        return [self._ip(4), self._ip(5)]

    @property
    def onprem_ip(self) -> str:
        return self._ip(12)

    @property
    def firewall_ip(self) -> str:
        return self._ip(3 * 256 + 4)

    def peer_ip(self, p: int) -> str:
        return self._ip(256 + 6 + p)


def world(n: int, *, drifted: frozenset[int] = frozenset()) -> dict[str, Any]:
    """The emulator world (World.from_dict input) for n hubs; hubs in `drifted` have branch-to-branch off."""
    doc: dict[str, list[dict[str, Any]]] = {
        "route_servers": [],
        "nvas": [],
        "gateways": [],
        "firewalls": [],
        "subnets": [],
        "route_tables": [],
    }
    for i in range(n):
        h = Hub(i)
        where = {"subscription": h.subscription, "resource_group": h.resource_group}
        doc["route_servers"].append(
            {
                **where,
                "name": "ars-hub",
                "ips": h.ars_ips,
                "hub_prefix": h.prefix,
                "branch_to_branch": i not in drifted,
                "connections": [
                    {"name": f"nva{p + 1}", "peer_ip": h.peer_ip(p), "peer_asn": 65001 + p} for p in range(PEERS)
                ],
            }
        )
        for p in range(PEERS):
            doc["nvas"].append(
                {
                    "ip": h.peer_ip(p),
                    "asn": 65001 + p,
                    "agent_token": "bench-token",
                    "announcements": [{"prefix": "0.0.0.0/0", "next_hop": h.firewall_ip, "as_path": str(65001 + p)}],
                }
            )
        doc["gateways"].append(
            {
                **where,
                "name": "ergw",
                "type": "ExpressRoute",
                "route_server": "ars-hub",
                "ips": h.gateway_ips,
                "onprem_peers": [
                    {"ip": h.onprem_ip, "asn": 12076, "prefixes": [f"172.{16 + i // 256}.{i % 256}.0/24"]}
                ],
            }
        )
        doc["firewalls"].append({**where, "name": "fw-hub", "kind": "vnet", "private_ip": h.firewall_ip})
        for name, third, length, table in (
            ("GatewaySubnet", 0, 27, None),
            ("NvaSubnet", 1, 24, "nva-rt"),
            ("RouteServerSubnet", 2, 24, None),
            ("AzureFirewallSubnet", 3, 26, "fw-rt"),
        ):
            doc["subnets"].append(
                {
                    **where,
                    "vnet": "hub-vnet",
                    "name": name,
                    "address_prefix": h.subnet(third, length),
                    "route_table": table,
                }
            )
        for table in ("fw-rt", "nva-rt"):
            doc["route_tables"].append(
                {
                    **where,
                    "name": table,
                    "routes": [{"name": "default-internet", "prefix": "0.0.0.0/0", "next_hop_type": "Internet"}],
                }
            )
    return doc


def desired(n: int) -> dict[str, Any]:
    """The desired-state document (reconciler.desired.parse input) for n hubs.

    No agents and no writes: the benchmark measures a detection pass (collect, diff, ledger), and
    a drifted hub's fixes are skipped by policy rather than applied.
    """
    targets = []
    for i in range(n):
        h = Hub(i)
        targets.append(
            {
                "name": h.name,
                "subscription_id": h.subscription,
                "resource_group": h.resource_group,
                "route_server": "ars-hub",
                "branch_to_branch": True,
                "firewall": {"name": "fw-hub"},
                "gateways": [{"name": "ergw", "type": "ExpressRoute", "onprem_peers": [h.onprem_ip]}],
                "prefixes": ["0.0.0.0/0"],
                "peers": [{"name": f"nva{p + 1}", "ip": h.peer_ip(p), "asn": 65001 + p} for p in range(PEERS)],
                "subnets": [
                    {
                        "vnet": "hub-vnet",
                        "subnet": subnet,
                        "routes": [{"prefix": "0.0.0.0/0", "next_hop_type": "Internet"}],
                    }
                    for subnet in ("AzureFirewallSubnet", "NvaSubnet")
                ],
                "policy": {"nva_fixes": False, "azure_writes": False},
            }
        )
    return {"version": 1, "targets": targets}


def drifted_hubs(n: int, every: int = 47) -> frozenset[int]:
    """Hubs given drift (branch-to-branch off): 3, 3 + every, ...; a step prime to 10 spreads them over
    the subscriptions, and N = 10 already has one. None if every <= 0."""
    if every <= 0:
        return frozenset()
    return frozenset(range(3, n, every))
