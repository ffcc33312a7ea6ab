"""The diff's side of issue #11's reads: every copy of a prefix, instance identity by localAddress,
FirewallHealth and VPN active-active. Pure: observations built with the factories."""

from __future__ import annotations

from dataclasses import replace

from reconciler.diff import diff, instance_name
from reconciler.drift import DriftCode as C
from reconciler.observed import (
    AgentNeighborView,
    AgentView,
    FirewallHealth,
    Gateway,
    GatewayConfig,
    HealthStatus,
    Hub,
    Route,
    Unknown,
)
from tests.unit.factories import ARS, FW, INST, default_route, observation, target


def found(obs: object, tgt: object = None) -> set[tuple[C, str]]:
    return {(d.code, d.subject) for d in diff(tgt or target(), obs)}  # type: ignore[arg-type]


def test_a_wrong_next_hop_on_any_copy_of_a_prefix_is_drift() -> None:
    second = replace(default_route(next_hop="10.0.1.6"), local_address=ARS[1])
    obs = observation(learned={"nva1": {INST[0]: (default_route(),), INST[1]: (default_route(), second)}})
    assert found(obs) == {(C.ROUTE_NEXT_HOP_WRONG, f"peer=nva1/instance={INST[1]}/prefix=0.0.0.0/0")}


def test_a_looped_as_path_on_any_copy_is_rejected_loop() -> None:
    looped = default_route(as_path="65001-65515")
    obs = observation(learned={"nva1": {INST[0]: (default_route(), looped), INST[1]: (default_route(),)}})
    assert (C.ROUTE_REJECTED_LOOP, f"peer=nva1/instance={INST[0]}/prefix=0.0.0.0/0") in found(obs)


def test_an_instance_is_named_by_the_local_address_of_its_routes_not_its_position() -> None:
    hub = Hub("Succeeded", "Provisioned", 65515, ARS, True, "ExpressRoute")
    learned = {INST[0]: (replace(default_route(), local_address=ARS[1]),),
               INST[1]: (replace(default_route(), local_address=ARS[0]),)}  # fmt: skip
    assert instance_name(hub, ARS[1], [learned]) == INST[0]
    assert instance_name(hub, ARS[0], [learned]) == INST[1]
    assert instance_name(hub, ARS[0], []) == INST[0]  # nothing learned: the position is all there is


def test_the_agents_view_names_the_instance_by_local_address() -> None:
    learned = {INST[0]: (replace(default_route(), local_address=ARS[1]),),
               INST[1]: (replace(default_route(), local_address=ARS[0]),)}  # fmt: skip
    down = AgentView(65001, "h", (AgentNeighborView(ARS[0], 65515, "Established", (Route("0.0.0.0/0", FW, "65001"),)),
                                  AgentNeighborView(ARS[1], 65515, "Idle", ())))  # fmt: skip
    obs = observation(learned={"nva1": learned}, agents={"nva1": down})
    assert (C.PEER_DOWN, f"peer=nva1/instance={INST[0]}") in found(obs)  # .5 is IN_0 here


def test_firewall_health_degraded_or_unhealthy_is_drift_healthy_or_unknown_status_is_not() -> None:
    for status, drift in [(HealthStatus.DEGRADED, True), (HealthStatus.UNHEALTHY, True),
                          (HealthStatus.HEALTHY, False), (HealthStatus.UNKNOWN, False)]:  # fmt: skip
        obs = observation(firewall_health=FirewallHealth(status, "SNAT port", 50.0))
        assert ((C.FIREWALL_UNHEALTHY, "firewall=fw-hub") in found(obs)) is drift, status


def test_an_unreadable_firewall_health_is_observation_failed() -> None:
    obs = observation(firewall_health=Unknown("firewall.health", "fw-hub", "HTTP 403 AuthorizationFailed"))
    assert found(obs) == {(C.OBSERVATION_FAILED, "read=firewall.health/resource=fw-hub")}


def test_an_active_standby_vpn_gateway_is_drift_an_expressroute_one_is_not_judged() -> None:
    vpn = target(gateways=[{"name": "vpngw", "type": "Vpn", "onprem_peers": []}],
                 prefixes=["0.0.0.0/1", "128.0.0.0/1"])  # fmt: skip
    standby = Gateway("vpngw", (default_route(),), {}, GatewayConfig("Vpn", False, "Succeeded"))
    assert (C.GATEWAY_NOT_ACTIVE_ACTIVE, "gateway=vpngw") in found(observation(gateways={"vpngw": standby}), vpn)
    active = replace(standby, config=GatewayConfig("Vpn", True, "Succeeded"))
    assert C.GATEWAY_NOT_ACTIVE_ACTIVE not in {c for c, _ in found(observation(gateways={"vpngw": active}), vpn)}


def test_an_instance_with_no_routes_is_the_one_no_other_address_claimed() -> None:
    # Published numbering: IN_0 on the higher address. The session to .5 is down, so IN_0 is empty;
    # the agent's down neighbour .5 must be named IN_0 too, or the two findings disagree.
    learned = {INST[0]: (), INST[1]: (replace(default_route(), local_address=ARS[0]),)}
    view = AgentView(65001, "h", (AgentNeighborView(ARS[0], 65515, "Established", (Route("0.0.0.0/0", FW, "65001"),)),))
    obs = observation(learned={"nva1": learned}, agents={"nva1": view})
    assert found(obs) == {
        (C.PEER_DOWN, f"peer=nva1/instance={INST[0]}"),
        (C.ROUTE_MISSING, f"peer=nva1/instance={INST[0]}/prefix=0.0.0.0/0"),
    }


def test_an_unhealthy_firewall_metric_makes_the_firewall_unhealthy_for_the_planner() -> None:
    from reconciler.service import known_from

    for status, healthy in [
        (HealthStatus.UNHEALTHY, False),
        (HealthStatus.DEGRADED, True),
        (HealthStatus.HEALTHY, True),
    ]:
        obs = observation(firewall_health=FirewallHealth(status, "", 0.0))
        assert known_from(target(), obs).firewall_healthy is healthy, status
