"""A local ARM (Azure Resource Manager) emulator for the ars-reconciler tests, demo and benchmarks.

It serves the Microsoft.Network REST shapes the reconciler reads over HTTPS with a throwaway CA, so
the real azure-mgmt-network client (paging, LROs, retries) runs against it; plus emulated NVA agents.
It owns the emulated platform: the world, its REST shapes, LROs, faults and throttling. It must
not import the reconciler's decisions (diff, plan, trace, effective routes): it emulates Azure, and
sharing the logic it is there to test would hide the bugs it must catch. It imports only platform
facts and shared rules (`reconciler.asn`, the route limits in `reconciler.desired`,
`reconciler.report_signature`) and the real agent's own models and policy (`nva_agent`).
"""

from .derive import LearnedSource
from .faults import Fault, FaultKind
from .server import ArmEmulator, RequestLog
from .throttle import Throttle
from .world import (
    Announcement,
    BgpConnection,
    Firewall,
    Gateway,
    Nic,
    Nva,
    NvaNeighbor,
    OnPremPeer,
    Route,
    RouteServer,
    RouteTable,
    Subnet,
    World,
    WorldError,
)

__all__ = [
    "Announcement",
    "ArmEmulator",
    "BgpConnection",
    "Fault",
    "FaultKind",
    "Firewall",
    "Gateway",
    "LearnedSource",
    "Nic",
    "Nva",
    "NvaNeighbor",
    "OnPremPeer",
    "RequestLog",
    "Route",
    "RouteServer",
    "RouteTable",
    "Subnet",
    "Throttle",
    "World",
    "WorldError",
]
