"""Table tests for effective routing: longest prefix first, then User > BGP > system (udr-overview)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from reconciler.effective_routes import (
    CandidateRoute,
    HopType,
    Requirement,
    RouteSource,
    resolve,
    route_server_routes,
    subnet_routes,
    violations,
)
from reconciler.observed import Route, RouteEntry, SubnetRouting, Unknown

FW = "10.1.3.4"
INTERNET = Requirement(IPv4Network("0.0.0.0/0"), HopType.INTERNET)
TO_FW = Requirement(IPv4Network("0.0.0.0/0"), HopType.VIRTUAL_APPLIANCE, FW)


def udr(prefix: str, hop: str = "Internet", ip: str | None = None) -> RouteEntry:
    return RouteEntry(f"r-{prefix}", prefix, hop, ip)


def bgp(prefix: str, ip: str = FW) -> CandidateRoute:
    return CandidateRoute(IPv4Network(prefix), RouteSource.BGP, HopType.VIRTUAL_NETWORK_GATEWAY, ip, "test")


def subnet(*udrs: RouteEntry, table: str | None = "rt", no_bgp: bool = False) -> SubnetRouting:
    return SubnetRouting("vnet", "sn", table, udrs, no_bgp if table else None)


HALVES = (bgp("0.0.0.0/1"), bgp("128.0.0.0/1"))

# (name, subnet, BGP routes, requirement, blocks that go elsewhere)
CASES: list[tuple[str, SubnetRouting, tuple[CandidateRoute, ...], Requirement, set[str]]] = [
    ("system routes only: internet via the default route", subnet(table=None), (), INTERNET, set()),
    ("BGP 0/0 beats the system 0/0", subnet(table=None), (bgp("0.0.0.0/0"),), INTERNET, {"0.0.0.0/0"}),
    ("UDR 0/0 beats BGP 0/0 (same prefix: User > BGP)", subnet(udr("0.0.0.0/0")), (bgp("0.0.0.0/0"),), INTERNET, set()),
    (
        "BGP /1 halves beat a 0/0 UDR (longest prefix first)",
        subnet(udr("0.0.0.0/0")),
        HALVES,
        INTERNET,
        {"0.0.0.0/1", "128.0.0.0/1"},
    ),
    (
        "/1 UDRs to Internet beat the BGP /1 halves",
        subnet(udr("0.0.0.0/0"), udr("0.0.0.0/1"), udr("128.0.0.0/1")),
        HALVES,
        INTERNET,
        set(),
    ),
    ("one /1 UDR missing leaves that half looping", subnet(udr("0.0.0.0/1")), HALVES, INTERNET, {"128.0.0.0/1"}),
    (
        "disableBgpRoutePropagation keeps the halves out",
        subnet(udr("0.0.0.0/0"), no_bgp=True),
        HALVES,
        INTERNET,
        set(),
    ),
    (
        "propagation flag means nothing without a table",
        subnet(table=None),
        HALVES,
        INTERNET,
        {"0.0.0.0/1", "128.0.0.0/1"},
    ),
    (
        "a more specific BGP route inside the internet is found",
        subnet(udr("0.0.0.0/0")),
        (bgp("8.8.8.0/24"),),
        INTERNET,
        {"8.8.8.0/24"},
    ),
    (
        "private ranges are not internet: 10/8 keeps its own route",
        subnet(udr("0.0.0.0/0")),
        (bgp("10.20.10.0/24", "10.0.0.4"),),
        INTERNET,
        set(),
    ),
    ("UDR to None black-holes", subnet(udr("0.0.0.0/0", "None")), (), INTERNET, {"0.0.0.0/0"}),
    ("spoke: BGP route to the firewall satisfies 'via the firewall'", subnet(table=None), HALVES, TO_FW, set()),
    (
        "spoke: UDR to the firewall satisfies it too",
        subnet(udr("0.0.0.0/0", "VirtualAppliance", FW)),
        (),
        TO_FW,
        set(),
    ),
    ("spoke: nothing from Route Server leaves it direct", subnet(table=None), (), TO_FW, {"0.0.0.0/0"}),
    (
        "spoke: ECMP with a second, wrong next hop is not whole",
        subnet(table=None),
        (bgp("0.0.0.0/0"), bgp("0.0.0.0/0", "10.1.1.9")),
        TO_FW,
        {"0.0.0.0/0"},
    ),
]


@pytest.mark.parametrize(("sn", "routes", "req", "bad"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_effective_route_case(
    sn: SubnetRouting, routes: tuple[CandidateRoute, ...], req: Requirement, bad: set[str]
) -> None:
    decisions = resolve(subnet_routes(sn, routes), req.prefix)
    assert {str(d.prefix) for d in violations(req, decisions)} == bad


def test_blocks_cover_the_prefix_exactly_once() -> None:
    decisions = resolve(subnet_routes(subnet(udr("0.0.0.0/0")), (*HALVES, bgp("8.8.8.0/24"))))
    assert sum(d.prefix.num_addresses for d in decisions) == 2**32
    assert [d.prefix for d in decisions] == sorted(d.prefix for d in decisions)


def test_winner_names_its_source() -> None:
    first, _second = violations(INTERNET, resolve(subnet_routes(subnet(udr("0.0.0.0/0")), HALVES)))
    assert first.describe() == "0.0.0.0/1 -> VirtualNetworkGateway 10.1.3.4 (test)"


def test_route_server_routes_drop_paths_with_65515_and_dedupe_instances() -> None:
    r = Route("0.0.0.0/1", FW, "65002")
    loop = Route("128.0.0.0/1", FW, "65002 65515")
    got = route_server_routes([("nva2", {"RouteServiceRole_IN_0": (r, loop), "RouteServiceRole_IN_1": (r,)})])
    assert not isinstance(got, Unknown)
    assert [(str(c.prefix), c.next_hop_ip) for c in got] == [("0.0.0.0/1", FW)]


def test_route_server_routes_unknown_when_any_peer_is_unreadable() -> None:
    u = Unknown("routes.learned", "nva2", "timeout")
    assert route_server_routes([("nva1", {"RouteServiceRole_IN_0": ()}), ("nva2", u)]) == u
