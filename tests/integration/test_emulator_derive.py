"""Route propagation in the emulator follows Azure's rules (DESIGN §11), seen through the real SDK."""

from __future__ import annotations

from typing import Any

import pytest
from azure.mgmt.network.aio import NetworkManagementClient

from emulator import Announcement, ArmEmulator
from tests.fixtures.emulator import TWO_TARGETS, network_client

IN_0, IN_1 = "RouteServiceRole_IN_0", "RouteServiceRole_IN_1"


async def learned(client: NetworkManagementClient, conn: str = "nva1", rg: str = "rg-hub", hub: str = "ars-hub") -> Any:
    poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes(rg, hub, conn)
    return await poller.result()


async def gateway_learned(client: NetworkManagementClient, rg: str = "rg-hub", gw: str = "ergw") -> set[str]:
    result = await (await client.virtual_network_gateways.begin_get_learned_routes(rg, gw)).result()
    return {r.network for r in result.value if r.origin == "IBgp"}


async def gateway_advertised(client: NetworkManagementClient, peer: str, rg: str, gw: str) -> set[str]:
    poller = await client.virtual_network_gateways.begin_get_advertised_routes(rg, gw, peer=peer)
    return {r.network for r in (await poller.result()).value}


async def test_branch_to_branch_off_means_gateway_learns_nothing_from_ars(emulator: ArmEmulator) -> None:
    emulator.world.route_server("sub-1", "rg-hub", "ars-hub").branch_to_branch = False
    async with network_client(emulator) as client:
        assert await gateway_learned(client) == set()
        assert "0.0.0.0/0" not in await gateway_advertised(client, "10.0.0.12", "rg-hub", "ergw")
        # ARS still learns from the NVA: only the ARS <-> gateway exchange stops.
        assert len((await learned(client))[IN_0]) == 1


async def test_routes_with_65515_in_the_path_are_dropped_by_ars(emulator: ArmEmulator) -> None:
    nva = emulator.world.nva("10.0.1.6")
    with emulator.world.lock:
        nva.out_filter = False  # the route-map that strips them was lost
        nva.announcements = [
            Announcement("0.0.0.0/0", "10.0.3.4", "65001"),
            Announcement("10.20.10.0/24", "10.0.3.4", "65001 65515 12076"),
        ]
    async with network_client(emulator) as client:
        routes = await learned(client)
    assert [r.network for r in routes[IN_0]] == ["0.0.0.0/0"]
    assert [r.network for r in routes[IN_1]] == ["0.0.0.0/0"]


async def test_disconnected_instance_learns_nothing_and_connection_is_connecting(emulator: ArmEmulator) -> None:
    conn = emulator.world.route_server("sub-1", "rg-hub", "ars-hub").connection("nva1")
    assert conn is not None
    conn.connected_instances = [0]
    async with network_client(emulator) as client:
        routes = await learned(client)
        state = (await client.virtual_hub_bgp_connection.get("rg-hub", "ars-hub", "nva1")).connection_state
        conn.connected_instances = []
        none = (await client.virtual_hub_bgp_connection.get("rg-hub", "ars-hub", "nva1")).connection_state
    assert (len(routes[IN_0]), routes[IN_1]) == (1, [])
    assert (state, none) == ("Connecting", "NotConnected")


async def test_more_than_4000_routes_drops_the_session(emulator: ArmEmulator) -> None:
    # Route Server limits: 4,000 routes per peer (the emulator dropped the session above 1,000, the old limit).
    many = [Announcement(f"172.16.{i // 256}.{i % 256}/32", "10.0.3.4", "65001") for i in range(4001)]
    emulator.world.nva("10.0.1.6").announcements = many
    async with network_client(emulator) as client:
        assert await learned(client) == {IN_0: [], IN_1: []}
        emulator.world.nva("10.0.1.6").announcements = many[:4000]
        assert len((await learned(client))[IN_0]) == 4000


async def test_peer_asn_mismatch_or_failed_provisioning_learns_nothing(emulator: ArmEmulator) -> None:
    conn = emulator.world.route_server("sub-1", "rg-hub", "ars-hub").connection("nva1")
    assert conn is not None
    async with network_client(emulator) as client:
        conn.peer_asn = 65002
        mismatch = await learned(client)
        conn.peer_asn, conn.provisioning_state = 65001, "Failed"
        failed = await learned(client)
    assert mismatch == failed == {IN_0: [], IN_1: []}


async def test_wrong_next_hop_reaches_ars_and_gateway_unchanged(emulator: ArmEmulator) -> None:
    emulator.world.nva("10.0.1.6").announcements = [Announcement("0.0.0.0/0", "10.0.1.6", "65001")]
    async with network_client(emulator) as client:
        routes = await learned(client)
        gw = await (await client.virtual_network_gateways.begin_get_learned_routes("rg-hub", "ergw")).result()
    assert {r.next_hop for r in routes[IN_0] + routes[IN_1]} == {"10.0.1.6"}
    assert {r.next_hop for r in gw.value if r.network == "0.0.0.0/0"} == {"10.0.1.6"}


@pytest.mark.parametrize("emulator_world_path", [TWO_TARGETS])
async def test_vpn_gateway_advertises_the_halves_but_not_the_default_route(emulator: ArmEmulator) -> None:
    async with network_client(emulator, "sub-2") as client:
        assert await gateway_learned(client, "rg-hub2", "vpngw") == {"0.0.0.0/1", "128.0.0.0/1"}
        sent = await gateway_advertised(client, "10.50.0.1", "rg-hub2", "vpngw")
        assert {"0.0.0.0/1", "128.0.0.0/1"} <= sent
        emulator.world.nva("10.1.1.6").announcements.append(Announcement("0.0.0.0/0", "10.1.3.4", "65002"))
        assert "0.0.0.0/0" in await gateway_learned(client, "rg-hub2", "vpngw")
        assert "0.0.0.0/0" not in await gateway_advertised(client, "10.50.0.1", "rg-hub2", "vpngw")


async def test_expressroute_gateway_advertises_the_default_route_onprem(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        assert "0.0.0.0/0" in await gateway_advertised(client, "10.0.0.12", "rg-hub", "ergw")


async def test_advertised_routes_to_an_unknown_peer_are_a_bad_request(emulator: ArmEmulator) -> None:
    from azure.core.exceptions import HttpResponseError

    async with network_client(emulator) as client:
        with pytest.raises(HttpResponseError) as err:
            await client.virtual_network_gateways.begin_get_advertised_routes("rg-hub", "ergw", peer="10.9.9.9")
    assert err.value.status_code == 400


async def test_lab_mode_source_replaces_derivation_for_that_peer(emulator: ArmEmulator) -> None:
    calls: list[int] = []

    def from_frr(instance: int) -> list[dict[str, object]] | None:
        calls.append(instance)
        if instance == 1:
            return None  # that stand-in route server has no session
        return [{"prefix": "0.0.0.0/0", "next_hop": "10.0.3.9", "as_path": "65001"}]

    emulator.set_learned_source("10.0.1.6", from_frr)
    async with network_client(emulator) as client:
        routes = await learned(client)
        gw = await (await client.virtual_network_gateways.begin_get_learned_routes("rg-hub", "ergw")).result()
        emulator.set_learned_source("10.0.1.6", None)
        derived = await learned(client)
    assert [(r.network, r.next_hop, r.local_address, r.source_peer) for r in routes[IN_0]] == [
        ("0.0.0.0/0", "10.0.3.9", "10.0.2.4", "10.0.1.6")
    ]
    assert routes[IN_1] == []
    assert {(r.source_peer, r.next_hop) for r in gw.value if r.network == "0.0.0.0/0"} == {("10.0.2.4", "10.0.3.9")}
    assert derived[IN_1][0].next_hop == "10.0.3.4"
    assert 0 in calls and 1 in calls


@pytest.mark.parametrize("emulator_world_path", [TWO_TARGETS])
async def test_two_targets_are_independent(emulator: ArmEmulator) -> None:
    emulator.world.route_server("sub-1", "rg-hub", "ars-hub").branch_to_branch = False
    async with network_client(emulator, "sub-2") as client:
        assert await gateway_learned(client, "rg-hub2", "vpngw") == {"0.0.0.0/1", "128.0.0.0/1"}
        routes = await learned(client, "nva2", "rg-hub2", "ars-hub2")
    assert {r.local_address for r in routes[IN_0]} == {"10.1.2.4"}


def test_effective_routes_of_the_vpn_firewall_subnet_follow_azure_selection() -> None:
    from emulator import World, derive

    world = World.load(TWO_TARGETS)
    sn = world.subnet("sub-2", "rg-hub2", "hub2-vnet", "AzureFirewallSubnet")
    routes = {
        (r["source"], r["addressPrefix"][0], r["nextHopType"]): r["state"] for r in derive.effective_routes(world, sn)
    }  # type: ignore[index]
    # Same prefix: the UDR is Active and Route Server's /1 Invalid; the system 0/0 loses to the 0/0 UDR.
    assert routes[("User", "0.0.0.0/1", "Internet")] == "Active"
    assert routes[("VirtualNetworkGateway", "0.0.0.0/1", "VirtualNetworkGateway")] == "Invalid"
    assert routes[("Default", "0.0.0.0/0", "Internet")] == "Invalid"
    assert routes[("Default", "10.1.0.0/16", "VnetLocal")] == "Active"
    world.route_table("sub-2", "rg-hub2", "fw-rt2").disable_bgp_route_propagation = True
    assert all(r["source"] != "VirtualNetworkGateway" for r in derive.effective_routes(world, sn))
