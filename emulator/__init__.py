"""A local ARM (Azure Resource Manager) emulator for the ars-reconciler tests, demo and benchmarks.

It serves the Microsoft.Network REST shapes the reconciler reads over HTTPS with a throwaway CA, so
the real azure-mgmt-network client (paging, LROs, retries) runs against it; plus emulated NVA agents.
It must not import the reconciler: it emulates Azure, it does not know who is asking.
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
