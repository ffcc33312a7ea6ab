"""Named ways the reference design breaks, applied to an emulated world (demo and tests share them).

Owns only world edits. Must not know how the reconciler detects or fixes them.
"""

from __future__ import annotations

from collections.abc import Callable

from emulator import Announcement, ArmEmulator, NvaNeighbor, World

SUB, RG, RS, FW, NVA_IP = "sub-1", "rg-hub", "ars-hub", "fw-hub", "10.0.1.6"


def firewall_redeployed(emu: ArmEmulator) -> str:
    with emu.world.lock:
        emu.world.firewall(SUB, RG, FW).private_ip = "10.0.3.5"
    return "Azure Firewall redeployed: its private IP is now 10.0.3.5, the NVA still points at 10.0.3.4"


def branch_to_branch_off(emu: ArmEmulator) -> str:
    with emu.world.lock:
        emu.world.route_server(SUB, RG, RS).branch_to_branch = False
    return "someone switched branch-to-branch off on the Route Server"


def instance_lost_peering(emu: ArmEmulator) -> str:
    with emu.world.lock:
        conn = emu.world.route_server(SUB, RG, RS).connection("nva1")
        assert conn is not None
        conn.connected_instances = [0]
        emu.world.nva(NVA_IP).neighbors = [NvaNeighbor("10.0.2.4")]
    return "a config edit removed the NVA's neighbor 10.0.2.5: ARS instance 1 lost its BGP session"


def next_hop_not_set(emu: ArmEmulator) -> str:
    with emu.world.lock:
        nva = emu.world.nva(NVA_IP)
        nva.announcements = [Announcement("0.0.0.0/0", NVA_IP, "65001")]
    return "a route-map edit on the NVA lost `set ip next-hop`: 0.0.0.0/0 now points at the NVA itself"


def default_route_withdrawn(emu: ArmEmulator) -> str:
    with emu.world.lock:
        emu.world.nva(NVA_IP).announcements = []
    return "`network 0.0.0.0/0` was removed from the NVA"


def firewall_deallocated(emu: ArmEmulator) -> str:
    with emu.world.lock:
        emu.world.firewall(SUB, RG, FW).private_ip = None
    return "Azure Firewall was deallocated: no private IP, the default route would black-hole"


def nva_at(emu_world: World, ip: str) -> None:
    """Move the reference lab's NVA (and its bgpConnection) to `ip`, e.g. the FRR lab's NVA address."""
    with emu_world.lock:
        emu_world.nva(NVA_IP).ip = ip
        conn = emu_world.route_server(SUB, RG, RS).connection("nva1")
        assert conn is not None
        conn.peer_ip = ip


BREAKS: dict[str, Callable[[ArmEmulator], str]] = {
    "firewall-redeployed": firewall_redeployed,
    "branch-to-branch-off": branch_to_branch_off,
    "instance-lost-peering": instance_lost_peering,
    "next-hop-not-set": next_hop_not_set,
    "default-route-withdrawn": default_route_withdrawn,
    "firewall-deallocated": firewall_deallocated,
}
