"""Replay Microsoft's published examples (tests/fixtures/arm/, sources in SOURCES.md) through the collector.

Each example's final body is served by the emulator for its operation, in the LRO style its 202
headers show, and the real SDK pipeline plus our Arm adapter read it: the observation must be the
one the example means. Then the emulator's own answers are held to the same shapes (keys and JSON
types), so the emulator cannot drift away from what Azure documents.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import ArmEmulator, Fault, World, derive, resources
from emulator.world import OperationLroStyle
from reconciler import desired
from reconciler.arm import NETWORK_API_VERSION, Arm, ArmOptions, StaticTokenCredential
from reconciler.diff import diff, instance_name
from reconciler.drift import DriftCode as C
from reconciler.observed import (
    Connection,
    EffectiveRoute,
    Firewall,
    FirewallHealth,
    Gateway,
    GatewayConfig,
    HealthStatus,
    Hub,
    Observation,
    RouteEntry,
    SubnetRouting,
    Unknown,
)
from tests.fixtures.emulator import REFERENCE_LAB, TWO_TARGETS, tls_context

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "arm"
REFERENCE = desired.load("schemas/examples/reference-lab.yaml").targets[0]
VPN_TARGET = next(
    t for t in desired.load("schemas/examples/two-targets.yaml").targets
    if any(g.type == desired.GatewayType.VPN for g in t.gateways)
)  # fmt: skip


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name).read_text())
    return data


def final_body(name: str) -> Any:
    return example(name)["responses"]["200"]["body"]


def style_of(name: str) -> str:
    """The LRO style the example's 202 shows (header names are case-insensitive)."""
    headers = {k.lower() for k in example(name)["responses"].get("202", {}).get("headers", {})}
    if headers == {"location"}:
        return "location"
    if headers == {"azure-asyncoperation"}:
        return "azure-async-operation"
    return "both"


@pytest.fixture
async def arm(emulator: ArmEmulator) -> AsyncIterator[Arm]:
    a = Arm(
        StaticTokenCredential("t"),
        ArmOptions(endpoint=emulator.base_url, ca_bundle=emulator.ca_file, poll_interval=0, retry_total=1),
    )
    yield a
    await a.close()


async def replay(arm: Arm, emu: ArmEmulator, op: str, name: str, target: desired.Target = REFERENCE) -> Observation:
    emu.inject(op, Fault.body(final_body(name), count=None))
    if op in ("routes.learned", "gateway.learned", "gateway.advertised", "nic.routes"):
        emu.world.lro_styles = [OperationLroStyle(op, style_of(name))]  # type: ignore[arg-type]
    return await arm.observe(target)


def every_file_is_replayed() -> Iterator[str]:
    yield from sorted(p.name for p in CORPUS.glob("*.json"))


# ---- the collector over each example ---------------------------------------------------------------------


async def test_virtual_hub_get(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "hub.get", "VirtualHubGet.json")
    assert obs.hub == Hub("Succeeded", "Provisioned", 65515, ("10.10.1.12", "10.10.1.13"), False, "ExpressRoute")


async def test_bgp_connection_list(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "bgp.list", "VirtualHubBgpConnectionList.json")
    assert obs.connections == (Connection("conn1", "192.168.1.5", 20000, "Succeeded", "Connected"),)


async def test_learned_routes_example_lists_each_prefix_once_per_local_address(arm: Arm, emulator: ArmEmulator) -> None:
    assert style_of("VirtualRouterPeerListLearnedRoute.json") == "location"
    obs = await replay(arm, emulator, "routes.learned", "VirtualRouterPeerListLearnedRoute.json")
    learned = obs.learned["nva1"]
    assert not isinstance(learned, Unknown)
    assert set(learned) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}
    for routes in learned.values():
        assert [(r.prefix, r.next_hop, r.local_address, r.as_path) for r in routes] == [
            ("10.101.0.0/16", "10.85.4.4", "10.85.3.4", "65002-65001"),
            ("10.101.0.0/16", "10.85.4.4", "10.85.3.5", "65002-65001"),
        ]


async def test_published_az_output_maps_instances_by_local_address(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "routes.learned", "az-routeserver-peering-list-learned-routes.json")
    learned = obs.learned["nva1"]
    assert not isinstance(learned, Unknown)
    assert set(learned) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}  # "value": null is no instance
    hub = Hub("Succeeded", "Provisioned", 65515, ("192.168.8.68", "192.168.8.69"), True, "ExpressRoute")
    # IN_0 answers on .69 although .68 comes first in virtualRouterIps.
    assert instance_name(hub, "192.168.8.69", [learned]) == "RouteServiceRole_IN_0"
    assert instance_name(hub, "192.168.8.68", [learned]) == "RouteServiceRole_IN_1"


async def test_published_az_output_with_nothing_learned_is_empty_instances(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "routes.learned", "az-routeserver-peering-list-learned-routes-empty.json")
    assert obs.learned["nva1"] == {"RouteServiceRole_IN_0": (), "RouteServiceRole_IN_1": ()}
    assert {d.code for d in diff(REFERENCE, obs)} == {C.ROUTE_MISSING}


@pytest.mark.parametrize(
    ("op", "name"),
    [("gateway.learned", "VirtualNetworkGatewayLearnedRoutes.json"),
     ("gateway.advertised", "VirtualNetworkGatewayGetAdvertisedRoutes.json")],
)  # fmt: skip
@pytest.mark.parametrize("style", ["as published", "location"])
async def test_gateway_route_examples_are_unknown_never_no_routes(
    arm: Arm, emulator: ArmEmulator, op: str, name: str, style: str
) -> None:
    # As published: 202 with Azure-AsyncOperation only, then a 200 body of `{}`. Neither is a route list.
    assert style_of(name) == "azure-async-operation"
    emulator.inject(op, Fault.body(final_body(name), count=None))
    emulator.world.lro_styles = [OperationLroStyle(op, "location" if style == "location" else style_of(name))]  # type: ignore[arg-type]
    obs = await arm.observe(REFERENCE)
    gw = obs.gateways["ergw"]
    assert isinstance(gw, Gateway)
    part = gw.learned if op == "gateway.learned" else gw.advertised["10.0.0.12"]
    assert isinstance(part, Unknown)
    assert ("no 'value' route list" if style == "location" else "without a result") in part.reason
    assert {d.code for d in diff(REFERENCE, obs)} == {C.OBSERVATION_FAILED}


async def test_virtual_network_gateway_get(arm: Arm) -> None:
    with ArmEmulator(World.load(TWO_TARGETS)) as emu:
        a = Arm(StaticTokenCredential("t"), ArmOptions(endpoint=emu.base_url, ca_bundle=emu.ca_file, poll_interval=0))
        try:
            obs = await replay(a, emu, "gateway.get", "VirtualNetworkGatewayGet.json", VPN_TARGET)
        finally:
            await a.close()
    gw = next(v for v in obs.gateways.values() if isinstance(v, Gateway) and v.config is not None)
    assert gw.config == GatewayConfig("Vpn", False, "Succeeded")
    assert C.GATEWAY_NOT_ACTIVE_ACTIVE in {d.code for d in diff(VPN_TARGET, obs)}


async def test_azure_firewall_get(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "firewall.get", "AzureFirewallGet.json")
    assert obs.firewall == Firewall("fw-hub", "Succeeded", "10.0.0.0")
    assert obs.firewall_ip == "10.0.0.0"


async def test_virtual_network_get(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "vnet.get", "VirtualNetworkGet.json")
    # The example's VNet has only `subnet1`: the declared subnets are not in it.
    assert dict(obs.subnets) == {f"{s.vnet}:{s.subnet}": None for s in REFERENCE.subnets}


async def test_route_table_get(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "routetable.get", "RouteTableGet.json")
    for key, sn in obs.subnets.items():
        assert isinstance(sn, SubnetRouting), key
        assert sn.routes == (RouteEntry("route1", "10.0.3.0/24", "VirtualNetworkGateway", None),)
        assert sn.disable_bgp_route_propagation is False


async def test_effective_route_table_of_system_routes_only(arm: Arm, emulator: ArmEmulator) -> None:
    # Microsoft's example answers system routes only: internet traffic leaves directly, which is what
    # the NVA's own NIC must do and what the workload VM's NIC (it must reach the firewall) must not.
    assert style_of("effective-route-table-system-only.json") == "location"
    obs = await replay(arm, emulator, "nic.routes", "effective-route-table-system-only.json")
    want = (
        EffectiveRoute(("10.0.0.0/16",), "Default", "Active", "VnetLocal", ()),
        EffectiveRoute(("0.0.0.0/0",), "Default", "Active", "Internet", ()),
        *(EffectiveRoute((p,), "Default", "Active", "None", ())
          for p in ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16")),
    )  # fmt: skip
    assert obs.nics == {"nva1-nic": want, "vm1-nic": want}
    wrong = {d.subject for d in diff(REFERENCE, obs) if d.code == C.NIC_ROUTE_WRONG}
    assert wrong == {f"nic=vm1-nic/prefix={p}" for p in REFERENCE.prefixes}


async def test_metrics_list_without_firewall_health_is_no_data(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "firewall.health", "GetMetric.json")
    assert obs.firewall_health is None


async def test_firewall_health_newest_point_decides(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await replay(arm, emulator, "firewall.health", "firewall-health-degraded.json")
    assert obs.firewall_health == FirewallHealth(HealthStatus.DEGRADED, "SNAT port", 50.0)
    assert (C.FIREWALL_UNHEALTHY, "firewall=fw-hub") in {(d.code, d.subject) for d in diff(REFERENCE, obs)}


# ---- the emulator against the same shapes ----------------------------------------------------------------


def shape(value: Any, path: str = "$") -> dict[str, str]:
    """Every key path (lists collapsed to []) with its JSON type; instance keys collapse to one."""
    out: dict[str, str] = {path: type(value).__name__}
    if isinstance(value, dict):
        for k, v in value.items():
            key = "RouteServiceRole_IN_n" if str(k).startswith("RouteServiceRole_IN_") else k
            out.update(shape(v, f"{path}.{key}"))
    elif isinstance(value, list):
        for v in value:
            out.update(shape(v, f"{path}[]"))
    return out


# Keys the emulator sends that the example for the operation does not show, each with its source.
EMULATOR_EXTRAS: dict[str, set[str]] = {
    # Route Server is a virtualHub of kind RouteServer; the example is a vWAN hub (notes §6).
    "VirtualHubGet.json": {"$.kind", "$.properties.ipConfigurations", "$.properties.ipConfigurations[]",
                           "$.properties.ipConfigurations[].id", "$.properties.bgpConnections",
                           "$.properties.bgpConnections[]", "$.properties.bgpConnections[].id"},
    # The list items carry their type (every ARM child resource does; notes §6).
    "VirtualHubBgpConnectionList.json": {"$.value[].type"},
    # The firewall's data-path IP configuration: subnet/publicIPAddress appear in the example's entry.
    "AzureFirewallGet.json": set(),
    "VirtualNetworkGet.json": {"$.properties.subnets[].type", "$.properties.subnets[].properties.routeTable",
                               "$.properties.subnets[].properties.routeTable.id"},
    "RouteTableGet.json": {"$.properties.subnets", "$.properties.subnets[]", "$.properties.subnets[].id"},
    "VirtualNetworkGatewayGet.json": set(),
    "VirtualRouterPeerListLearnedRoute.json": set(),
    "firewall-health-degraded.json": set(),
    "GetMetric.json": set(),
    # A UDR's entry names its route (azure-rest-api-specs, networkInterface.json, EffectiveRoute.name:
    # "The name of the user defined route. This is optional."); the example has no UDR. Its next-hop lists
    # are all empty; EffectiveRoute.nextHopIpAddress is an array of strings (same definition).
    "effective-route-table-system-only.json": {"$.value[].name", "$.value[].nextHopIpAddress[]"},
}  # fmt: skip


def emulator_answers(emu: ArmEmulator) -> dict[str, Any]:
    """The emulator's own final answer per corpus file's operation (reference lab + the VPN world)."""
    world = emu.world
    rs = world.route_server("sub-1", "rg-hub", "ars-hub")
    headers = {"Authorization": "Bearer t"}
    base = "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network"
    with httpx.Client(base_url=emu.base_url, verify=tls_context(emu), headers=headers) as http:

        def get(path: str, **params: str) -> Any:
            r = http.get(base + path, params={"api-version": NETWORK_API_VERSION, **params})
            assert r.status_code == 200, r.text
            return r.json()

        vnet = get("/virtualNetworks/hub-vnet")
        metrics = get("/azureFirewalls/fw-hub/providers/Microsoft.Insights/metrics", metricnames="FirewallHealth")
        answers = {
            "VirtualHubGet.json": get("/virtualHubs/ars-hub"),
            "VirtualHubBgpConnectionList.json": get("/virtualHubs/ars-hub/bgpConnections"),
            "AzureFirewallGet.json": get("/azureFirewalls/fw-hub"),
            "VirtualNetworkGet.json": vnet,
            "RouteTableGet.json": get("/routeTables/fw-rt"),
            "firewall-health-degraded.json": metrics,
            "GetMetric.json": metrics,  # the published Metrics - List example, not only our own file
        }
    with world.lock:
        answers["VirtualRouterPeerListLearnedRoute.json"] = derive.learned_routes(world, rs, rs.connections[0])
        nic = world.find_nic("sub-1", "rg-hub", "nva1-nic")
        assert nic is not None
        subnet = world.find_subnet(nic.subscription, nic.resource_group, nic.vnet, nic.subnet)
        assert subnet is not None
        answers["effective-route-table-system-only.json"] = {"value": derive.effective_routes(world, subnet)}
    vpn_world = World.load(TWO_TARGETS)
    vpn = next(g for g in vpn_world.gateways if g.type == "Vpn")
    answers["VirtualNetworkGatewayGet.json"] = resources.gateway_json(vpn)
    return answers


def test_the_emulator_answers_in_the_corpus_shapes() -> None:
    with ArmEmulator(World.load(REFERENCE_LAB)) as emu:
        answers = emulator_answers(emu)
    problems = []
    for name, answer in sorted(answers.items()):
        want, got = shape(final_body(name)), shape(answer)
        for path, kind in sorted(got.items()):
            if path in want and "NoneType" not in (kind, want[path]) and kind != want[path]:
                problems.append(f"{name}: {path} is {kind}, the example has {want[path]}")
            elif path not in want and path not in EMULATOR_EXTRAS[name]:
                problems.append(f"{name}: {path} is not in the example")
        stale = EMULATOR_EXTRAS[name] - set(got)
        problems.extend(f"{name}: allowed extra {path} is no longer sent" for path in sorted(stale))
    assert problems == []


def test_every_corpus_file_has_a_source_line_and_a_replay() -> None:
    sources = (CORPUS / "SOURCES.md").read_text()
    this = Path(__file__).read_text()
    for name in every_file_is_replayed():
        assert f"| {name} |" in sources, name
        assert f'"{name}"' in this, f"{name} is not replayed by a test here"
