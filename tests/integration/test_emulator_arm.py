"""The ARM emulator speaks the REST shapes the real azure-mgmt-network aio client expects (notes §3, §5, §6)."""

from __future__ import annotations

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.mgmt.network.models import BgpConnection

from emulator import ArmEmulator, Firewall
from emulator import BgpConnection as WorldConnection
from tests.fixtures.emulator import network_client, tls_context

HUB = "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network/virtualHubs/ars-hub"


def ops(emu: ArmEmulator) -> list[str]:
    return [r.op for r in emu.requests]


async def test_hub_get_returns_route_server_properties(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        hub = await client.virtual_hubs.get("rg-hub", "ars-hub")
    assert hub.virtual_router_asn == 65515
    assert hub.virtual_router_ips == ["10.0.2.4", "10.0.2.5"]
    assert hub.allow_branch_to_branch_traffic is True
    assert hub.provisioning_state == "Succeeded"
    assert hub.routing_state == "Provisioned"
    assert hub.hub_routing_preference == "ExpressRoute"
    assert hub.id.endswith("/virtualHubs/ars-hub")


async def test_bgp_connections_list_follows_next_link_across_pages(emulator: ArmEmulator) -> None:
    rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
    with emulator.world.lock:
        rs.connections += [WorldConnection(f"extra{i}", f"10.0.1.{10 + i}", 65001) for i in range(4)]
    async with network_client(emulator) as client:
        names = [c.name async for c in client.virtual_hub_bgp_connections.list("rg-hub", "ars-hub")]
    assert names == ["nva1", "extra0", "extra1", "extra2", "extra3"]
    assert ops(emulator).count("bgp.list") == 3  # page size 2: 2 + 2 + 1


async def test_bgp_connection_reports_peer_and_connection_state(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        conn = await client.virtual_hub_bgp_connection.get("rg-hub", "ars-hub", "nva1")
    assert (conn.peer_ip, conn.peer_asn, conn.provisioning_state) == ("10.0.1.6", 65001, "Succeeded")
    assert conn.connection_state == "Connected"


async def test_learned_routes_is_an_lro_keyed_by_instance(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        learned = await poller.result()
    assert set(learned) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}
    for inst, local in (("RouteServiceRole_IN_0", "10.0.2.4"), ("RouteServiceRole_IN_1", "10.0.2.5")):
        (route,) = learned[inst]
        assert (route.network, route.next_hop, route.as_path) == ("0.0.0.0/0", "10.0.3.4", "65001")
        assert (route.local_address, route.source_peer, route.origin) == (local, "10.0.1.6", "EBgp")
        assert route.weight == 32768
    assert ops(emulator) == ["routes.learned", "lro.poll", "lro.poll", "lro.poll"]
    assert [r.status for r in emulator.requests] == [202, 200, 200, 200]


async def test_location_style_lro_answers_202_then_the_result() -> None:
    from emulator import World
    from tests.fixtures.emulator import REFERENCE_LAB

    with ArmEmulator(World.load(REFERENCE_LAB), lro_style="location", lro_polls=2) as emu:
        async with network_client(emu) as client:
            poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
            learned = await poller.result()
        assert learned["RouteServiceRole_IN_1"][0].next_hop == "10.0.3.4"
        assert [(r.op, r.status) for r in emu.requests] == [
            ("routes.learned", 202),
            ("lro.poll", 202),
            ("lro.poll", 202),
            ("lro.poll", 200),
        ]
        assert "operationresults" in emu.requests[-1].path.lower()


async def test_advertised_routes_carry_hub_prefix_and_onprem_with_65515_prepended(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        poller = await client.virtual_hub_bgp_connections.begin_list_advertised_routes("rg-hub", "ars-hub", "nva1")
        advertised = await poller.result()
    routes = {r.network: r.as_path for r in advertised["RouteServiceRole_IN_0"]}
    assert routes == {"10.0.0.0/16": "65515", "10.20.10.0/24": "65515-12076-65020"}


async def test_gateway_calls_return_value_lists(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        gw = await client.virtual_network_gateways.get("rg-hub", "ergw")
        learned = await (await client.virtual_network_gateways.begin_get_learned_routes("rg-hub", "ergw")).result()
        advertised = await (
            await client.virtual_network_gateways.begin_get_advertised_routes("rg-hub", "ergw", peer="10.0.0.12")
        ).result()
        peers = await (await client.virtual_network_gateways.begin_get_bgp_peer_status("rg-hub", "ergw")).result()
    assert gw.gateway_type == "ExpressRoute"
    from_ars = [r for r in learned.value if r.network == "0.0.0.0/0"]
    assert {(r.source_peer, r.next_hop, r.origin, r.as_path) for r in from_ars} == {
        ("10.0.2.4", "10.0.3.4", "IBgp", "65001"),
        ("10.0.2.5", "10.0.3.4", "IBgp", "65001"),
    }
    onprem = [r for r in learned.value if r.network == "10.20.10.0/24"]
    assert [(r.origin, r.as_path) for r in onprem] == [("EBgp", "12076-65020")]
    assert "0.0.0.0/0" in {r.network for r in advertised.value}
    states = {(p.neighbor, p.asn, p.state) for p in peers.value}
    assert ("10.0.2.4", 65515, "Connected") in states
    assert ("10.0.2.5", 65515, "Connected") in states
    assert ("10.0.0.12", 12076, "Connected") in states


async def test_firewall_private_ip_in_vnet_shape_and_vwan_shape(emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        emulator.world.firewalls.append(
            Firewall("sub-1", "rg-hub", "fw-vwan", kind="vwan", private_ip="10.100.64.4", virtual_hub="vhub")
        )
        emulator.world.firewalls.append(Firewall("sub-1", "rg-hub", "fw-off", private_ip=None))
    async with network_client(emulator) as client:
        vnet = await client.azure_firewalls.get("rg-hub", "fw-hub")
        vwan = await client.azure_firewalls.get("rg-hub", "fw-vwan")
        off = await client.azure_firewalls.get("rg-hub", "fw-off")
    assert vnet.ip_configurations[0].private_ip_address == "10.0.3.4"
    assert vnet.sku.name == "AZFW_VNet"
    assert vwan.ip_configurations == []
    assert vwan.hub_ip_addresses.private_ip_address == "10.100.64.4"
    assert vwan.sku.name == "AZFW_Hub"
    assert off.ip_configurations == []
    assert off.provisioning_state == "Succeeded"


async def test_subnet_points_at_route_table_with_default_internet_route(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        subnet = await client.subnets.get("rg-hub", "hub-vnet", "AzureFirewallSubnet")
        table = await client.route_tables.get("rg-hub", subnet.route_table.id.rsplit("/", 1)[-1])
    assert subnet.address_prefix == "10.0.3.0/26"
    assert table.name == "fw-rt"
    assert table.disable_bgp_route_propagation is False
    assert [(r.name, r.address_prefix, r.next_hop_type) for r in table.routes] == [
        ("default-internet", "0.0.0.0/0", "Internet")
    ]
    assert [s.id.rsplit("/", 1)[-1] for s in table.subnets] == ["AzureFirewallSubnet"]


async def test_hub_put_switches_branch_to_branch(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        hub = await client.virtual_hubs.get("rg-hub", "ars-hub")
        hub.allow_branch_to_branch_traffic = False
        updated = await (await client.virtual_hubs.begin_create_or_update("rg-hub", "ars-hub", hub)).result()
    assert updated.allow_branch_to_branch_traffic is False
    assert emulator.world.route_server("sub-1", "rg-hub", "ars-hub").branch_to_branch is False


async def test_bgp_connection_put_and_delete_change_the_world(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        created = await (
            await client.virtual_hub_bgp_connection.begin_create_or_update(
                "rg-hub", "ars-hub", "nva2", BgpConnection(peer_ip="10.0.1.7", peer_asn=65001)
            )
        ).result()
        assert (created.name, created.peer_ip, created.provisioning_state) == ("nva2", "10.0.1.7", "Succeeded")
        # No NVA lives at 10.0.1.7, so no session comes up.
        assert created.connection_state == "NotConnected"
        await (await client.virtual_hub_bgp_connection.begin_delete("rg-hub", "ars-hub", "nva2")).result()
        with pytest.raises(ResourceNotFoundError):
            await client.virtual_hub_bgp_connection.get("rg-hub", "ars-hub", "nva2")
    assert [c.name for c in emulator.world.route_server("sub-1", "rg-hub", "ars-hub").connections] == ["nva1"]


async def test_recreated_connection_to_a_configured_nva_comes_up_on_both_instances(emulator: ArmEmulator) -> None:
    rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
    with emulator.world.lock:
        rs.connections[0].peer_asn = 65099
    async with network_client(emulator) as client:
        fixed = await (
            await client.virtual_hub_bgp_connection.begin_create_or_update(
                "rg-hub", "ars-hub", "nva1", {"properties": {"peerIp": "10.0.1.6", "peerAsn": 65001}}
            )
        ).result()
    assert (fixed.peer_asn, fixed.connection_state) == (65001, "Connected")


async def test_unknown_resources_are_404_with_arm_error_body(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        with pytest.raises(ResourceNotFoundError) as err:
            await client.virtual_hubs.get("rg-hub", "nope")
        with pytest.raises(ResourceNotFoundError):
            await client.azure_firewalls.get("rg-other", "fw-hub")
    assert err.value.error is not None
    assert err.value.error.code == "ResourceNotFound"
    # A 404 carries no Retry-After, so the SDK did not retry it.
    assert ops(emulator) == ["hub.get", "firewall.get"]


async def test_request_without_bearer_token_is_401(emulator: ArmEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=tls_context(emulator)) as http:
        bare = await http.get(HUB, params={"api-version": "2026-03-01"})
        wrong_scheme = await http.get(
            HUB, params={"api-version": "2026-03-01"}, headers={"Authorization": "Basic eDp5"}
        )
    assert bare.status_code == wrong_scheme.status_code == 401
    assert bare.json()["error"]["code"] == "AuthenticationFailed"
    assert bare.headers["content-length"] == str(len(bare.content))


async def test_sdk_with_empty_token_gets_client_authentication_error(emulator: ArmEmulator) -> None:
    from azure.mgmt.network.aio import NetworkManagementClient

    from tests.fixtures.emulator import AsyncStaticTokenCredential

    async with NetworkManagementClient(
        AsyncStaticTokenCredential(" "), "sub-1", base_url=emulator.base_url, connection_verify=emulator.ca_file
    ) as client:
        with pytest.raises(ClientAuthenticationError):
            await client.virtual_hubs.get("rg-hub", "ars-hub")


async def test_paths_are_case_insensitive_and_url_decoded_with_any_api_version(emulator: ArmEmulator) -> None:
    headers = {"Authorization": "Bearer x"}
    path = "/SUBSCRIPTIONS/sub-1/resourcegroups/RG-HUB/providers/microsoft.network/VIRTUALHUBS/ars%2Dhub"
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=tls_context(emulator)) as http:
        resp = await http.get(path, params={"api-version": "1999-01-01"}, headers=headers)
        bad_method = await http.patch(HUB, headers=headers)
    assert resp.status_code == 200
    assert resp.json()["name"] == "ars-hub"
    assert bad_method.status_code == 405
    assert "retry-after" not in bad_method.headers


async def test_requests_are_logged_with_subscription_and_can_be_reset(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        await client.virtual_hubs.get("rg-hub", "ars-hub")
    (entry,) = emulator.requests
    assert (entry.method, entry.op, entry.status, entry.subscription) == ("GET", "hub.get", 200, "sub-1")
    assert entry.path.endswith("/virtualHubs/ars-hub")
    emulator.reset_requests()
    assert emulator.requests == []


async def test_hub_ip_configurations_point_at_route_server_subnet(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        configs = [c async for c in client.virtual_hub_ip_configuration.list("rg-hub", "ars-hub")]
    assert [c.subnet.id.rsplit("/", 1)[-1] for c in configs] == ["RouteServerSubnet"]
