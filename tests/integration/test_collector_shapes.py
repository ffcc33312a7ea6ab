"""Shapes real Azure produces, through the real SDK pipeline and our Arm adapter, against the emulator.

Each test is one defect of issue #11 (reads): it failed on the collector that trusted the SDK's
models, took an operation status for a result, or judged the first copy of a route only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from emulator import ArmEmulator, Fault, World
from emulator.world import OperationLroStyle
from reconciler import arm as arm_module
from reconciler import desired
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.errors import TransientError
from reconciler.observed import FirewallHealth, Gateway, HealthStatus, Observation, Unknown
from reconciler.plan import plan
from reconciler.service import known_from

REFERENCE = desired.load("schemas/examples/reference-lab.yaml").targets[0]
TWO = desired.load("schemas/examples/two-targets.yaml")
LRO_READS = ("routes.learned", "gateway.learned", "gateway.advertised")


@pytest.fixture
async def arm(emulator: ArmEmulator) -> AsyncIterator[Arm]:
    a = Arm(
        StaticTokenCredential("t"),
        ArmOptions(endpoint=emulator.base_url, ca_bundle=emulator.ca_file, poll_interval=0, retry_total=1),
    )
    yield a
    await a.close()


def codes(obs: Observation, target: desired.Target = REFERENCE) -> set[tuple[C, str]]:
    return {(d.code, d.subject) for d in diff(target, obs)}


def route(network: str, next_hop: str, local: str, as_path: str = "65001") -> dict[str, Any]:
    return {"localAddress": local, "network": network, "nextHop": next_hop, "sourcePeer": "10.0.1.6",
            "origin": "EBgp", "asPath": as_path, "weight": 32768}  # fmt: skip


def learned_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "RouteServiceRole_IN_0": [route("0.0.0.0/0", "10.0.3.4", "10.0.2.4")],
        "RouteServiceRole_IN_1": [route("0.0.0.0/0", "10.0.3.4", "10.0.2.5")],
    }
    body.update(extra)
    return body


def nothing_planned(obs: Observation, target: desired.Target = REFERENCE) -> None:
    p = plan(target, diff(target, obs), known_from(target, obs), datetime.now(UTC))
    assert p.steps == (), p


# ---- item 1: instance identity ---------------------------------------------------------------------


async def test_a_value_null_beside_the_instances_is_not_an_instance(arm: Arm, emulator: ArmEmulator) -> None:
    # Published `az network routeserver peering list-learned-routes` output carries "value": null.
    emulator.world.route_server("sub-1", "rg-hub", "ars-hub").learned_value_null = True
    obs = await arm.observe(REFERENCE)
    learned = obs.learned["nva1"]
    assert not isinstance(learned, Unknown)
    assert set(learned) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}
    assert diff(REFERENCE, obs) == []


async def test_many_odd_top_level_keys_neither_fail_the_read_nor_grow_memory(arm: Arm, emulator: ArmEmulator) -> None:
    # The "log each ignored key once" memory was unbounded: a worker kept every odd key ARM ever sent.
    odd = {f"extra-{i}-{'x' * 200}": None for i in range(500)}
    emulator.inject("routes.learned", Fault.body(learned_body(**odd), count=None), subscription="sub-1")
    obs = await arm.observe(REFERENCE)
    assert set(obs.learned["nva1"]) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}  # type: ignore[arg-type]
    assert len(arm_module._IGNORED_KEYS_LOGGED) <= arm_module.IGNORED_KEYS_REMEMBERED
    assert all(len(k) <= 60 for k in arm_module._IGNORED_KEYS_LOGGED)


async def test_a_body_without_any_instance_key_is_unknown_not_route_missing(arm: Arm, emulator: ArmEmulator) -> None:
    emulator.inject("routes.learned", Fault.body({"value": None}), subscription="sub-1")
    obs = await arm.observe(REFERENCE)
    assert isinstance(obs.learned["nva1"], Unknown)
    assert "no RouteServiceRole_IN_* key" in obs.learned["nva1"].reason
    assert {c for c, _ in codes(obs)} == {C.OBSERVATION_FAILED}
    nothing_planned(obs)


async def test_a_wrong_next_hop_on_a_second_copy_of_the_prefix_is_found(arm: Arm, emulator: ArmEmulator) -> None:
    # Microsoft's example lists the prefix once per localAddress in each instance.
    body = learned_body()
    body["RouteServiceRole_IN_1"].append(route("0.0.0.0/0", "10.0.1.6", "10.0.2.4"))
    emulator.inject("routes.learned", Fault.body(body), subscription="sub-1")
    found = codes(await arm.observe(REFERENCE))
    assert found == {(C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_1/prefix=0.0.0.0/0")}


# ---- item 2: LRO styles ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["location", "both"])
async def test_route_queries_answering_with_location_are_read(arm: Arm, emulator: ArmEmulator, style: str) -> None:
    emulator.world.lro_style = style  # type: ignore[assignment]
    obs = await arm.observe(REFERENCE)
    assert diff(REFERENCE, obs) == []
    polls = [r.path for r in emulator.requests if r.op == "lro.poll"]
    assert polls and all("/operationResults/" in p for p in polls)


@pytest.mark.parametrize("op", LRO_READS)
async def test_an_async_operation_only_answer_is_unknown_never_no_routes(
    arm: Arm, emulator: ArmEmulator, op: str
) -> None:
    # Microsoft's examples answer the route-query POSTs with 202 + Azure-AsyncOperation only: the
    # client ends holding {"status": "Succeeded"}, which is no route list.
    emulator.world.lro_styles = [OperationLroStyle(op, "azure-async-operation")]
    obs = await arm.observe(REFERENCE)
    found = diff(REFERENCE, obs)
    assert {d.code for d in found} == {C.OBSERVATION_FAILED}, found
    assert [d.part("read") for d in found] == [op]
    assert "without a result" in found[0].observed
    nothing_planned(obs)


@pytest.mark.parametrize("op", [*LRO_READS, "nic.routes"])
async def test_a_result_in_the_final_status_properties_is_read(arm: Arm, emulator: ArmEmulator, op: str) -> None:
    # ARM's operation resource may carry the result in `properties` (azure-resource-manager-rpc,
    # Addendum "Operation resource format"); the collector accepts that shape, so the emulator sends it.
    emulator.world.lro_styles = [OperationLroStyle(op, "status-properties")]
    obs = await arm.observe(REFERENCE)
    assert diff(REFERENCE, obs) == []
    polls = [r.path for r in emulator.requests if r.op == "lro.poll"]
    assert any("/operations/" in p for p in polls)


async def test_the_world_chooses_the_style_per_operation(emulator: ArmEmulator) -> None:
    emulator.world.lro_style = "location"
    emulator.world.lro_styles = [OperationLroStyle("gateway.learned", "azure-async-operation")]
    assert emulator.lro_style_for("routes.learned") == "location"
    assert emulator.lro_style_for("gateway.learned") == "azure-async-operation"
    emulator.world.lro_style = None
    assert emulator.lro_style_for("routes.learned") == "both"


# ---- item 3: wrong-typed bodies ----------------------------------------------------------------------

WRONG_TYPED = [
    ("hub.get", {"properties": {"provisioningState": "Succeeded", "virtualRouterIps": "10.0.2.4,10.0.2.5"}}),
    ("hub.get", {"properties": {"provisioningState": "Succeeded", "virtualRouterIps": ["10.0.2.4", "ten"]}}),
    ("hub.get", ["not", "a", "hub"]),
    ("bgp.list", {"value": "nva1"}),
    ("bgp.list", {"value": [{"name": "nva1", "properties": {"peerIp": 17, "peerAsn": 65001}}]}),
    ("routes.learned", {"RouteServiceRole_IN_0": "0.0.0.0/0"}),
    ("routes.learned", {"RouteServiceRole_IN_0": [{"network": "default", "nextHop": "10.0.3.4"}]}),
    ("gateway.learned", {"value": {"network": "0.0.0.0/0"}}),
    ("gateway.learned", {}),  # Microsoft's example body for getLearnedRoutes
    ("gateway.advertised", "routes"),
    ("firewall.get", {"properties": {"ipConfigurations": {"privateIPAddress": "10.0.3.4"}}}),
    ("firewall.get", {"properties": {"ipConfigurations": [{"properties": {"privateIPAddress": "x"}}]}}),
    ("firewall.health", {"value": [{"name": {"value": "FirewallHealth"}, "timeseries": "Healthy"}]}),
    ("vnet.get", {"properties": {"subnets": {"AzureFirewallSubnet": {}}}}),
    ("routetable.get", {"properties": {"routes": [{"properties": {"addressPrefix": 0}}]}}),
    ("routetable.get", {"properties": {"routes": [], "disableBgpRoutePropagation": "no"}}),
]


@pytest.mark.parametrize(("op", "body"), WRONG_TYPED, ids=[f"{op}-{i}" for i, (op, _) in enumerate(WRONG_TYPED)])
async def test_a_wrong_typed_body_is_observation_failed_naming_the_read(
    arm: Arm, emulator: ArmEmulator, op: str, body: object
) -> None:
    emulator.inject(op, Fault.body(body, count=None), subscription="sub-1")
    obs = await arm.observe(REFERENCE)
    failed = [d for d in diff(REFERENCE, obs) if d.code == C.OBSERVATION_FAILED]
    assert op in {d.part("read") for d in failed}, diff(REFERENCE, obs)
    assert all("internal" not in d.observed.lower() for d in failed)
    nothing_planned(obs)


# ---- item 5: firewall ----------------------------------------------------------------------------------


async def test_the_firewall_ip_comes_from_whichever_ip_configuration_has_one(arm: Arm, emulator: ArmEmulator) -> None:
    mgmt = {"name": "mgmt", "properties": {"subnet": {"id": "x/AzureFirewallManagementSubnet"}}}
    data = {"name": "ipconfig", "properties": {"privateIPAddress": "10.0.3.4"}}
    body = {"name": "fw-hub", "properties": {"provisioningState": "Succeeded", "ipConfigurations": [mgmt, data]}}
    emulator.inject("firewall.get", Fault.body(body), subscription="sub-1")
    obs = await arm.observe(REFERENCE)
    assert obs.firewall_ip == "10.0.3.4"
    assert diff(REFERENCE, obs) == []


async def test_a_vwan_firewall_ip_comes_from_hub_ip_addresses(arm: Arm, emulator: ArmEmulator) -> None:
    fw = emulator.world.firewall("sub-1", "rg-hub", "fw-hub")
    fw.kind = "vwan"
    obs = await arm.observe(REFERENCE)
    assert obs.firewall_ip == "10.0.3.4"


@pytest.mark.parametrize(
    ("status", "reason"), [("Degraded", "SNAT port"), ("Unhealthy", "")], ids=["degraded", "unhealthy"]
)
async def test_a_degraded_or_unhealthy_firewall_health_metric_is_firewall_unhealthy(
    arm: Arm, emulator: ArmEmulator, status: str, reason: str
) -> None:
    fw = emulator.world.firewall("sub-1", "rg-hub", "fw-hub")
    fw.health, fw.health_reason = status, reason  # type: ignore[assignment]
    obs = await arm.observe(REFERENCE)
    assert obs.firewall_health == FirewallHealth(HealthStatus(status), reason, 50.0 if status == "Degraded" else 0.0)
    drifts = diff(REFERENCE, obs)
    assert [(d.code, d.subject) for d in drifts] == [(C.FIREWALL_UNHEALTHY, "firewall=fw-hub")]
    assert status in drifts[0].observed and (reason in drifts[0].observed)
    metric_reads = [r for r in emulator.requests if r.op == "firewall.health"]
    assert len(metric_reads) == 1 and "/providers/Microsoft.Insights/metrics" in metric_reads[0].path


async def test_a_healthy_firewall_metric_is_no_drift(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await arm.observe(REFERENCE)
    assert obs.firewall_health == FirewallHealth(HealthStatus.HEALTHY, "", 100.0)


# ---- item 8: VPN gateway active-active ------------------------------------------------------------------


@pytest.fixture
def emulator_world_path() -> Any:
    from tests.fixtures.emulator import REFERENCE_LAB

    return REFERENCE_LAB


async def test_an_active_standby_vpn_gateway_is_drift(emulator: ArmEmulator) -> None:
    world = World.load("emulator/worlds/two-targets.yaml")
    vpn = next(t for t in TWO.targets if any(g.type == desired.GatewayType.VPN for g in t.gateways))
    gw_name = next(g.name for g in vpn.gateways if g.type == desired.GatewayType.VPN)
    gw = next(g for g in world.gateways if g.name == gw_name)
    with ArmEmulator(world) as emu:
        a = Arm(StaticTokenCredential("t"), ArmOptions(endpoint=emu.base_url, ca_bundle=emu.ca_file, poll_interval=0))
        try:
            healthy = await a.observe(vpn)
            assert isinstance(healthy.gateways[gw_name], Gateway)
            assert C.GATEWAY_NOT_ACTIVE_ACTIVE not in {d.code for d in diff(vpn, healthy)}
            gw.active_active = False
            broken = diff(vpn, await a.observe(vpn))
        finally:
            await a.close()
    assert (C.GATEWAY_NOT_ACTIVE_ACTIVE, f"gateway={gw_name}") in {(d.code, d.subject) for d in broken}
    assert [r.op for r in emu.requests].count("gateway.get") == 2


# ---- item 9: writes the ARM way ----------------------------------------------------------------------------


async def test_enabling_branch_to_branch_puts_the_whole_hub_with_if_match(arm: Arm, emulator: ArmEmulator) -> None:
    rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
    rs.branch_to_branch, rs.routing_preference, rs.min_capacity = False, "ASPath", 4
    await arm.enable_branch_to_branch(REFERENCE)
    # A partial body would have reset what it left out: the PUT replaces the resource.
    assert (rs.branch_to_branch, rs.routing_preference, rs.min_capacity) == (True, "ASPath", 4)
    assert rs.provisioning_state == "Succeeded"  # the LRO ran to its end
    puts = [r for r in emulator.requests if r.op == "hub.put"]
    assert [r.status for r in puts] == [201]


async def test_a_hub_changed_between_get_and_put_is_deferred_not_overwritten(
    arm: Arm, emulator: ArmEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
    rs.branch_to_branch = False
    real = emulator.handle

    def someone_else_writes_first(req: Any) -> Any:
        if req.method == "PUT":
            with emulator.world.lock:
                rs.generation += 1  # another writer's PUT landed after our GET
                rs.routing_preference = "VpnGateway"
        return real(req)

    monkeypatch.setattr(emulator, "handle", someone_else_writes_first)
    with pytest.raises(TransientError, match="412"):
        await arm.enable_branch_to_branch(REFERENCE)
    assert (rs.branch_to_branch, rs.routing_preference) == (False, "VpnGateway")


async def test_the_emulator_refuses_a_partial_hub_body_and_replaces_on_put(emulator: ArmEmulator) -> None:
    from tests.fixtures.emulator import network_client

    rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
    rs.routing_preference = "ASPath"
    async with network_client(emulator) as client:
        with pytest.raises(Exception, match="LocationRequired"):
            await client.virtual_hubs.begin_create_or_update(
                "rg-hub", "ars-hub", {"properties": {"allowBranchToBranchTraffic": True}}
            )
        poller = await client.virtual_hubs.begin_create_or_update(
            "rg-hub", "ars-hub", {"location": "westeurope", "properties": {"allowBranchToBranchTraffic": True}}
        )
        hub = await poller.result()
    # What the body left out went back to its default: a merge would have kept ASPath.
    assert (hub.hub_routing_preference, rs.routing_preference) == ("ExpressRoute", "ExpressRoute")
    assert hub.provisioning_state == "Succeeded"


async def test_a_key_that_is_not_an_instance_is_logged_once(
    arm: Arm, emulator: ArmEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    key = "valueForThisTestOnly"  # the logged-once set is per process: a key no other test uses
    emulator.inject("routes.learned", Fault.body(learned_body(**{key: None}), count=None), subscription="sub-1")
    with caplog.at_level("INFO", logger="reconciler.arm"):
        for _ in range(2):
            assert diff(REFERENCE, await arm.observe(REFERENCE)) == []
    assert sum(key in r.getMessage() for r in caplog.records) == 1


async def test_instances_numbered_from_the_higher_address_are_read_by_local_address(
    arm: Arm, emulator: ArmEmulator
) -> None:
    rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
    rs.instances_reversed = True
    obs = await arm.observe(REFERENCE)
    learned = obs.learned["nva1"]
    assert not isinstance(learned, Unknown)
    assert {inst: {r.local_address for r in routes} for inst, routes in learned.items()} == {
        "RouteServiceRole_IN_0": {"10.0.2.5"},
        "RouteServiceRole_IN_1": {"10.0.2.4"},
    }
    assert diff(REFERENCE, obs) == []


def test_a_world_file_chooses_lro_styles_and_a_typo_is_refused() -> None:
    from tests.fixtures.emulator import REFERENCE_LAB

    data = World.load(REFERENCE_LAB).to_dict()
    data["lro_style"] = "location"
    data["lro_styles"] = [{"op": "gateway.learned", "style": "azure-async-operation", "subscription": "sub-1"}]
    with ArmEmulator(World.from_dict(data)) as emu:
        assert emu.lro_style_for("routes.learned", "sub-1") == "location"
        assert emu.lro_style_for("gateway.learned", "sub-1") == "azure-async-operation"
        assert emu.lro_style_for("gateway.learned", "sub-2") == "location"
    data["lro_styles"] = [{"op": "routes.learnt", "style": "both"}]
    with pytest.raises(ValueError, match=r"routes\.learnt"):
        ArmEmulator(World.from_dict(data))
