"""Table-driven diff cases: one change from a healthy world, and the exact drifts it must produce."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.observed import (
    AgentNeighborView,
    AgentView,
    Connection,
    Firewall,
    Gateway,
    Hub,
    Observation,
    Route,
    RouteEntry,
    SubnetRouting,
    Unknown,
)
from tests.unit.factories import ARS, FW, INST, default_route, observation, target

Obs = Observation
P0, P1 = (f"peer=nva1/instance={i}/prefix=0.0.0.0/0" for i in INST)


def learned(r0: tuple[Route, ...], r1: tuple[Route, ...]) -> dict[str, Any]:
    return {"nva1": {INST[0]: r0, INST[1]: r1}}


def agent(*neighbors: AgentNeighborView) -> dict[str, AgentView]:
    return {"nva1": AgentView(65001, "h", neighbors)}


def nb(ip: str, state: str = "Established", route: Route | None = None) -> AgentNeighborView:
    r = route if route is not None else Route("0.0.0.0/0", FW, "65001")
    return AgentNeighborView(ip, 65515, state, (r,))


def hub(**kw: Any) -> Hub:
    return replace(Hub("Succeeded", "Provisioned", 65515, ARS, True, "ExpressRoute"), **kw)


def gw(**kw: Any) -> dict[str, Gateway]:
    base = observation().gateways["ergw"]
    assert isinstance(base, Gateway)
    return {"ergw": replace(base, **kw)}


Case = tuple[str, dict[str, Any], Callable[[Obs], Obs], set[tuple[C, str]]]

CASES: list[Case] = [
    ("healthy", {}, lambda o: o, set()),
    # --- Route Server
    ("hub missing", {}, lambda o: replace(o, hub=None), {(C.ROUTE_SERVER_UNHEALTHY, "route_server=ars-hub")}),
    (
        "hub failed",
        {},
        lambda o: replace(o, hub=hub(provisioning_state="Failed")),
        {(C.ROUTE_SERVER_UNHEALTHY, "route_server=ars-hub")},
    ),
    (
        "routing still provisioning",
        {},
        lambda o: replace(o, hub=hub(routing_state="Provisioning")),
        {(C.ROUTE_SERVER_UNHEALTHY, "route_server=ars-hub")},
    ),
    (
        "branch-to-branch off",
        {},
        lambda o: replace(o, hub=hub(branch_to_branch=False)),
        {(C.BRANCH_TO_BRANCH_DISABLED, "route_server=ars-hub")},
    ),
    (
        "look-alike: b2b off but not wanted",
        {"branch_to_branch": False},
        lambda o: replace(o, hub=hub(branch_to_branch=False)),
        set(),
    ),
    # --- peers
    ("peer missing", {}, lambda o: replace(o, connections=(), learned={}), {(C.PEER_MISSING, "peer=nva1")}),
    (
        "peer asn differs",
        {},
        lambda o: replace(o, connections=(Connection("nva1", "10.0.1.6", 65002, "Succeeded", "Connected"),)),
        {(C.PEER_MISMATCH, "peer=nva1")},
    ),
    (
        "peer ip differs",
        {},
        lambda o: replace(o, connections=(Connection("nva1", "10.0.1.7", 65001, "Succeeded", "Connected"),)),
        {(C.PEER_MISMATCH, "peer=nva1")},
    ),
    (
        "peer failed though ip/asn match",
        {},
        lambda o: replace(o, connections=(Connection("nva1", "10.0.1.6", 65001, "Failed", "Connected"),)),
        {(C.PEER_FAILED, "peer=nva1")},
    ),
    (
        "look-alike: same peer under another name",
        {},
        lambda o: replace(
            o,
            connections=(Connection("nva-one", "10.0.1.6", 65001, "Succeeded", "Connected"),),
            learned={"nva-one": o.learned["nva1"]},
        ),
        set(),
    ),
    (
        "unexpected peer",
        {},
        lambda o: replace(
            o, connections=(*o.connections, Connection("rogue", "10.0.1.9", 65009, "Succeeded", "Connected"))
        ),
        {(C.PEER_UNEXPECTED, "peer=rogue")},
    ),
    (
        "peer down on one instance (agent view)",
        {},
        lambda o: replace(o, agents=agent(nb(ARS[0]), nb(ARS[1], "Active"))),
        {(C.PEER_DOWN, f"peer=nva1/instance={INST[1]}")},
    ),
    (
        "neighbor missing in NVA config",
        {},
        lambda o: replace(o, agents=agent(nb(ARS[0]))),
        {(C.PEER_DOWN, f"peer=nva1/instance={INST[1]}")},
    ),
    (
        "peer down seen from ARM only",
        {},
        lambda o: replace(
            o,
            agents={},
            connections=(Connection("nva1", "10.0.1.6", 65001, "Succeeded", "Connecting"),),
            learned=learned((default_route(),), ()),
        ),
        {(C.PEER_DOWN, f"peer=nva1/instance={INST[1]}"), (C.ROUTE_MISSING, P1)},
    ),
    # --- routes
    (
        "route missing everywhere",
        {},
        lambda o: replace(
            o,
            learned=learned((), ()),
            agents=agent(
                AgentNeighborView(ARS[0], 65515, "Established", ()), AgentNeighborView(ARS[1], 65515, "Established", ())
            ),
        ),
        {(C.ROUTE_MISSING, P0), (C.ROUTE_MISSING, P1)},
    ),
    (
        "route missing on one instance",
        {},
        lambda o: replace(o, learned=learned((default_route(),), ())),
        {(C.ROUTE_MISSING, P1)},
    ),
    (
        "next hop is the NVA itself",
        {},
        lambda o: replace(
            o,
            learned=learned((default_route("10.0.1.6"),), (default_route("10.0.1.6"),)),
            agents=agent(
                nb(ARS[0], route=Route("0.0.0.0/0", "10.0.1.6", "65001")),
                nb(ARS[1], route=Route("0.0.0.0/0", "10.0.1.6", "65001")),
            ),
        ),
        {(C.ROUTE_NEXT_HOP_WRONG, P0), (C.ROUTE_NEXT_HOP_WRONG, P1)},
    ),
    (
        "firewall redeployed with new IP",
        {},
        lambda o: replace(
            o,
            firewall=Firewall("fw-hub", "Succeeded", "10.0.3.5"),
            firewall_ip="10.0.3.5",
            gateways=gw(learned=(Route("0.0.0.0/0", FW, "65001"),)),
        ),
        {
            (C.ROUTE_NEXT_HOP_WRONG, P0),
            (C.ROUTE_NEXT_HOP_WRONG, P1),
            (C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0"),
        },
    ),
    (
        "NVA sends ARS routes back (65515 in path)",
        {},
        lambda o: replace(
            o,
            agents=agent(
                AgentNeighborView(
                    ARS[0],
                    65515,
                    "Established",
                    (Route("0.0.0.0/0", FW, "65001"), Route("10.0.0.0/16", FW, "65001 65515")),
                ),
                nb(ARS[1]),
            ),
        ),
        {(C.ROUTE_REJECTED_LOOP, f"peer=nva1/instance={INST[0]}/prefix=10.0.0.0/16")},
    ),
    (
        "default route sent with 65515 in path",
        {},
        lambda o: replace(o, agents=agent(nb(ARS[0], route=Route("0.0.0.0/0", FW, "65001 65515")), nb(ARS[1]))),
        {(C.ROUTE_REJECTED_LOOP, P0)},
    ),
    (
        "unexpected prefix learned",
        {},
        lambda o: replace(
            o,
            learned=learned(
                (default_route(), Route("8.8.8.0/24", FW, "65001", "EBgp", "10.0.1.6")), (default_route(),)
            ),
        ),
        # Route Server programs the /24 into AzureFirewallSubnet too: longer than the 0/0 UDR, so the
        # firewall's own traffic to 8.8.8.0/24 would loop back to itself.
        {
            (C.ROUTE_UNEXPECTED, f"peer=nva1/instance={INST[0]}/prefix=8.8.8.0/24"),
            (C.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0"),
        },
    ),
    (
        "route limit risk",
        {"route_limit_warn": 3},
        lambda o: replace(
            o,
            learned=learned(
                (default_route(), *(Route(f"10.9.{i}.0/24", FW, "65001", "EBgp", "10.0.1.6") for i in range(3))),
                (default_route(),),
            ),
        ),
        {(C.ROUTE_LIMIT_RISK, "peer=nva1")}
        | {(C.ROUTE_UNEXPECTED, f"peer=nva1/instance={INST[0]}/prefix=10.9.{i}.0/24") for i in range(3)},
    ),
    (
        "look-alike: other peer's route in the map",
        {},
        lambda o: replace(
            o,
            learned=learned(
                (default_route(), Route("8.8.8.0/24", "10.0.1.9", "65009", "EBgp", "10.0.1.9")), (default_route(),)
            ),
        ),
        # Not this peer's route, yet Route Server programs it: the firewall subnet sends 8.8.8.0/24 to 10.0.1.9.
        {(C.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0")},
    ),
    # --- gateways
    (
        "gateway not learning",
        {},
        lambda o: replace(o, gateways=gw(learned=())),
        {(C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0")},
    ),
    (
        "gateway learned with wrong next hop",
        {},
        lambda o: replace(o, gateways=gw(learned=(Route("0.0.0.0/0", "10.0.1.6", "65001"),))),
        {(C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0")},
    ),
    (
        "gateway not advertising on-premises",
        {},
        lambda o: replace(o, gateways=gw(advertised={"10.0.0.12": ()})),
        {(C.GATEWAY_NOT_ADVERTISING, "gateway=ergw/onprem=10.0.0.12/prefix=0.0.0.0/0")},
    ),
    (
        "gateway gone",
        {},
        lambda o: replace(o, gateways={"ergw": None}),
        {(C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0")},
    ),
    (
        "look-alike: VPN gateway not advertising 0/0 is by design",
        {
            "gateways": [
                {"name": "ergw", "type": "ExpressRoute"},
                {"name": "vpngw", "type": "Vpn", "onprem_peers": ["10.50.0.1"]},
            ]
        },
        lambda o: replace(
            o,
            gateways={
                **o.gateways,
                "vpngw": Gateway("vpngw", (Route("0.0.0.0/0", FW, "65001"),), {"10.50.0.1": ()}),
            },
        ),
        set(),
    ),
    # --- firewall
    (
        "firewall deallocated",
        {},
        lambda o: replace(o, firewall=Firewall("fw-hub", "Succeeded", None), firewall_ip=None),
        {(C.FIREWALL_UNHEALTHY, "firewall=fw-hub")},
    ),
    (
        "firewall failed",
        {},
        lambda o: replace(o, firewall=Firewall("fw-hub", "Failed", FW)),
        {(C.FIREWALL_UNHEALTHY, "firewall=fw-hub")},
    ),
    (
        "firewall gone",
        {},
        lambda o: replace(o, firewall=None, firewall_ip=None),
        {(C.FIREWALL_UNHEALTHY, "firewall=fw-hub")},
    ),
    (
        "look-alike: fixed firewall IP needs no firewall resource",
        {"firewall": {"private_ip": FW}},
        lambda o: replace(o, firewall=None),
        set(),
    ),
    # --- UDRs
    (
        "UDR detached",
        {},
        lambda o: replace(
            o,
            subnets={"hub-vnet:AzureFirewallSubnet": SubnetRouting("hub-vnet", "AzureFirewallSubnet", None, (), None)},
        ),
        {(C.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0")},
    ),
    (
        "UDR points 0/0 elsewhere",
        {},
        lambda o: replace(
            o,
            subnets={
                "hub-vnet:AzureFirewallSubnet": SubnetRouting(
                    "hub-vnet",
                    "AzureFirewallSubnet",
                    "fw-rt",
                    (RouteEntry("d", "0.0.0.0/0", "VirtualAppliance", "10.0.1.6"),),
                    False,
                )
            },
        ),
        {(C.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0")},
    ),
    (
        "subnet gone",
        {},
        lambda o: replace(o, subnets={"hub-vnet:AzureFirewallSubnet": None}),
        {(C.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0")},
    ),
    (
        "look-alike: extra routes in the table are fine",
        {},
        lambda o: replace(
            o,
            subnets={
                "hub-vnet:AzureFirewallSubnet": SubnetRouting(
                    "hub-vnet",
                    "AzureFirewallSubnet",
                    "fw-rt",
                    (
                        RouteEntry("x", "192.168.0.0/16", "VirtualAppliance", "10.0.1.6"),
                        RouteEntry("default-internet", "0.0.0.0/0", "Internet", None),
                    ),
                    True,
                )
            },
        ),
        set(),
    ),
]


@pytest.mark.parametrize(("overrides", "change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diff_case(overrides: dict[str, Any], change: Callable[[Obs], Obs], expected: set[tuple[C, str]]) -> None:
    drifts = diff(target(**overrides), change(observation()))
    assert {(d.code, d.subject) for d in drifts} == expected


UNKNOWN_CASES: list[tuple[str, Callable[[Obs], Obs], str]] = [
    ("hub", lambda o: replace(o, hub=Unknown("hub.get", "ars-hub", "HTTP 500")), "read=hub.get/resource=ars-hub"),
    (
        "peers",
        lambda o: replace(o, connections=Unknown("bgp.list", "ars-hub", "HTTP 500"), learned={}),
        "read=bgp.list/resource=ars-hub",
    ),
    (
        "learned",
        lambda o: replace(o, learned={"nva1": Unknown("routes.learned", "nva1", "LRO failed")}),
        "read=routes.learned/resource=nva1",
    ),
    (
        "gateway learned",
        lambda o: replace(o, gateways=gw(learned=Unknown("gateway.learned", "ergw", "x"))),
        "read=gateway.learned/resource=ergw",
    ),
    (
        "gateway advertised",
        lambda o: replace(
            o, gateways=gw(advertised={"10.0.0.12": Unknown("gateway.advertised", "ergw:10.0.0.12", "x")})
        ),
        "read=gateway.advertised/resource=ergw:10.0.0.12",
    ),
    (
        "firewall",
        lambda o: replace(o, firewall=Unknown("firewall.get", "fw-hub", "timeout")),
        "read=firewall.get/resource=fw-hub",
    ),
    (
        "subnet",
        lambda o: replace(
            o, subnets={"hub-vnet:AzureFirewallSubnet": Unknown("subnet.get", "hub-vnet:AzureFirewallSubnet", "x")}
        ),
        "read=subnet.get/resource=hub-vnet:AzureFirewallSubnet",
    ),
    (
        "agent",
        lambda o: replace(o, agents={"nva1": Unknown("agent.state", "nva1", "connection refused")}),
        "read=agent.state/resource=nva1",
    ),
]


@pytest.mark.parametrize(("change", "subject"), [c[1:] for c in UNKNOWN_CASES], ids=[c[0] for c in UNKNOWN_CASES])
def test_unknown_read_is_observation_failed_and_nothing_else(change: Callable[[Obs], Obs], subject: str) -> None:
    drifts = diff(target(), change(observation()))
    assert [(d.code, d.subject) for d in drifts] == [(C.OBSERVATION_FAILED, subject)]


def test_firewall_unknown_hides_next_hop_verdicts() -> None:
    obs = replace(
        observation(),
        firewall=Unknown("firewall.get", "fw-hub", "x"),
        firewall_ip=None,
        learned=learned((default_route("10.9.9.9"),), (default_route("10.9.9.9"),)),
    )
    codes = {d.code for d in diff(target(), obs)}
    assert C.ROUTE_NEXT_HOP_WRONG not in codes
    assert C.OBSERVATION_FAILED in codes


def test_identities_are_stable_and_unique() -> None:
    obs = replace(observation(), learned=learned((), ()))
    a, b = diff(target(), obs), diff(target(), obs)
    assert [d.identity for d in a] == [d.identity for d in b]
    assert len({d.identity for d in a}) == len(a)


def test_vpn_halves_from_route_server_beat_a_default_udr_on_the_firewall_subnet() -> None:
    halves = tuple(Route(p, FW, "65001", "EBgp", "10.0.1.6") for p in ("0.0.0.0/1", "128.0.0.0/1"))
    t = target(prefixes=["0.0.0.0/1", "128.0.0.0/1"], gateways=[])
    obs = replace(observation(), learned=learned(halves, halves), gateways={}, agents={})
    (d,) = [d for d in diff(t, obs) if d.code is C.UDR_INVARIANT_BROKEN]
    assert d.subject == "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0"
    assert d.observed.startswith("0.0.0.0/1 -> VirtualNetworkGateway 10.0.3.4 (BGP from Route Server, peer nva1)")
    # The cure: the two halves -> Internet as UDRs too.
    udrs = tuple(RouteEntry(p, p, "Internet", None) for p in ("0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1"))
    fixed = replace(
        obs,
        subnets={
            "hub-vnet:AzureFirewallSubnet": SubnetRouting("hub-vnet", "AzureFirewallSubnet", "fw-rt", udrs, False)
        },
    )
    assert [d for d in diff(t, fixed) if d.code is C.UDR_INVARIANT_BROKEN] == []


def test_on_premises_routes_the_gateway_programs_count_too() -> None:
    # On-premises sends the two /1 halves over ExpressRoute (forced tunnelling): the gateway programs
    # them into every subnet, and they beat AzureFirewallSubnet's 0/0 UDR as the NVA's would.
    halves = tuple(Route(p, "10.0.0.12", "12076-65020", "EBgp", "10.0.0.12") for p in ("0.0.0.0/1", "128.0.0.0/1"))
    base = gw()["ergw"]
    obs = replace(observation(), gateways={"ergw": replace(base, learned=(*base.learned, *halves))})
    (d,) = [d for d in diff(target(), obs) if d.code is C.UDR_INVARIANT_BROKEN]
    assert "BGP from gateway ergw (on-premises)" in d.observed
