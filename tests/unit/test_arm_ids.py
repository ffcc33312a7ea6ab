"""One ARM ID format for every place that names a Microsoft.Network resource."""

from __future__ import annotations

from urllib.parse import quote

from reconciler.arm_ids import network_id

HUB = "/subscriptions/s1/resourceGroups/rg-hub/providers/Microsoft.Network/virtualHubs/ars-hub"


def test_a_resource_a_child_and_a_type_prefix() -> None:
    assert network_id("s1", "rg-hub", "virtualHubs", "ars-hub") == HUB
    assert network_id("s1", "rg-hub", "virtualHubs", "ars-hub", "bgpConnections", "nva1") == f"{HUB}/bgpConnections/nva1"
    assert network_id("s1", "rg-hub", "routeTables") == HUB.rsplit("/", 2)[0] + "/routeTables"


def test_every_part_goes_through_the_caller_s_quoting() -> None:
    got = network_id("s 1", "rg/x", "virtualNetworks", "v n", segment=lambda p: quote(p, safe=""))
    assert got == "/subscriptions/s%201/resourceGroups/rg%2Fx/providers/Microsoft.Network/virtualNetworks/v%20n"
