"""The emulator's virtualNetworks GET: the subnets (and their routeTable ids) come back inline."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError

from emulator import ArmEmulator, Fault
from tests.fixtures.emulator import network_client


async def test_vnet_get_returns_every_subnet_with_its_route_table(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        vnet = await client.virtual_networks.get("rg-hub", "hub-vnet")
    assert vnet.id.endswith("/resourceGroups/rg-hub/providers/Microsoft.Network/virtualNetworks/hub-vnet")
    tables = {sn.name: (sn.route_table.id.rsplit("/", 1)[-1] if sn.route_table else None) for sn in vnet.subnets}
    assert tables == {
        "AzureFirewallSubnet": "fw-rt",
        "NvaSubnet": "nva-rt",
        "RouteServerSubnet": None,
        "GatewaySubnet": None,
        "WorkloadSubnet": None,
    }
    assert vnet.address_space.address_prefixes == [
        "10.0.0.0/27", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/26", "10.0.4.0/24"
    ]
    assert [r.op for r in emulator.requests] == ["vnet.get"]


async def test_vnet_get_is_case_insensitive(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        vnet = await client.virtual_networks.get("RG-HUB", "Hub-VNet")
    assert vnet.name == "hub-vnet"


async def test_unknown_vnet_is_404(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        with pytest.raises(ResourceNotFoundError):
            await client.virtual_networks.get("rg-hub", "no-such-vnet")


async def test_vnet_get_takes_injected_faults(emulator: ArmEmulator) -> None:
    emulator.inject("vnet.get", Fault.throttle(count=1, retry_after=0), resource="hub-vnet")
    async with network_client(emulator) as client:
        vnet = await client.virtual_networks.get("rg-hub", "hub-vnet")
    assert len(vnet.subnets) == 5
    assert [r.status for r in emulator.requests] == [429, 200]
