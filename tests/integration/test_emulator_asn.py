"""The emulator refuses a bgpConnection Azure would refuse: Route Server peers only with 16-bit ASNs
outside the reserved ranges (Route Server FAQ; the one list is reconciler/asn.py)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from emulator import ArmEmulator
from tests.fixtures.emulator import network_client


@pytest.mark.parametrize("asn", [65535, 65551, 4200000000, 65515, 12076])
async def test_a_connection_with_an_asn_route_server_refuses_is_a_400(emulator: ArmEmulator, asn: int) -> None:
    async with network_client(emulator) as client:
        with pytest.raises(HttpResponseError) as err:
            await (
                await client.virtual_hub_bgp_connection.begin_create_or_update(
                    "rg-hub", "ars-hub", "nva9", {"properties": {"peerIp": "10.0.1.9", "peerAsn": asn}}
                )
            ).result()
    assert err.value.status_code == 400 and "cannot peer with Route Server" in str(err.value)
    assert [c.name for c in emulator.world.route_server("sub-1", "rg-hub", "ars-hub").connections] == ["nva1"]


async def test_a_connection_with_a_usable_asn_is_created(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        made = await (
            await client.virtual_hub_bgp_connection.begin_create_or_update(
                "rg-hub", "ars-hub", "nva9", {"properties": {"peerIp": "10.0.1.9", "peerAsn": 65009}}
            )
        ).result()
    assert made.peer_asn == 65009
