"""The trace over every drift scenario of the diff table: the first broken hop is the expected cause."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.observed import Firewall, Observation, Route, RouteEntry, SubnetRouting, Unknown
from reconciler.trace import HopKind, Verdict, trace
from tests.unit.factories import FW, INST, observation, target
from tests.unit.test_diff import CASES

ONPREM = "ergw:10.0.0.12"
FW_SUBNET = "hub-vnet:AzureFirewallSubnet"
EGRESS = f"subnet:{FW_SUBNET}"

# Scenario (a row of the diff table) -> root-cause hop of the on-premises path; None = whole path.
EXPECTED_CAUSE: dict[str, str | None] = {
    "healthy": None,
    "hub missing": "route_server",
    "hub failed": "route_server",
    "routing still provisioning": "route_server",
    "branch-to-branch off": "branch_to_branch",
    "look-alike: b2b off but not wanted": None,
    "peer missing": "peering:nva1",
    "peer asn differs": "peering:nva1",
    "peer ip differs": "peering:nva1",
    "peer failed though ip/asn match": "peering:nva1",
    "look-alike: same peer under another name": None,
    "unexpected peer": None,  # a warning beside the path, not on it
    "peer down on one instance (agent view)": "peering:nva1",
    "neighbor missing in NVA config": "peering:nva1",
    "peer down seen from ARM only": "peering:nva1",
    "route missing everywhere": "nva:nva1",  # FRR stopped sending it: Route Server lacking it follows
    "route missing on one instance": "learned:nva1",  # FRR sends it; one instance does not hold it
    "next hop is the NVA itself": "nva:nva1",
    "firewall redeployed with new IP": "nva:nva1",  # the NVA still points at the old IP
    "NVA sends ARS routes back (65515 in path)": None,  # 10.0.0.0/16 is not on the internet path
    "default route sent with 65515 in path": "nva:nva1",
    "unexpected prefix learned": EGRESS,  # Route Server pushes 8.8.8.0/24 into the firewall subnet
    "route limit risk": None,
    "look-alike: other peer's route in the map": EGRESS,
    "gateway not learning": "gateway_learned:ergw",
    "gateway learned with wrong next hop": "gateway_learned:ergw",
    "gateway not advertising on-premises": f"gateway_advertised:{ONPREM}",
    "gateway gone": "gateway_learned:ergw",
    "look-alike: VPN gateway not advertising 0/0 is by design": None,
    "firewall deallocated": "firewall",
    "firewall failed": "firewall",
    "firewall gone": "firewall",
    "look-alike: fixed firewall IP needs no firewall resource": None,
    "UDR detached": EGRESS,
    "UDR points 0/0 elsewhere": EGRESS,
    "subnet gone": EGRESS,
    "look-alike: extra routes in the table are fine": None,
}


def test_every_diff_scenario_has_an_expected_cause() -> None:
    assert {c[0] for c in CASES} == set(EXPECTED_CAUSE)


@pytest.mark.parametrize(
    ("overrides", "change", "name"), [(c[1], c[2], c[0]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_first_broken_hop_is_the_expected_cause(
    overrides: dict[str, Any], change: Callable[[Observation], Observation], name: str
) -> None:
    t, obs = target(**overrides), change(observation())
    (tr,) = trace(t, obs)
    onprem = tr.paths[0]
    cause = onprem.root_cause
    assert (cause.id if cause else None) == EXPECTED_CAUSE[name]
    assert onprem.verdict is (Verdict.OK if cause is None else Verdict.BROKEN)
    # Every drift on the path is explained by some hop, and the cause explains at least one drift.
    drifts = diff(t, obs)
    explained = {d.identity for p in tr.paths for h in p.hops for d in h.drifts}
    on_path = {d.identity for d in drifts if d.code not in {C.PEER_UNEXPECTED, C.ROUTE_LIMIT_RISK, C.ROUTE_UNEXPECTED}}
    on_path -= {d.identity for d in drifts if d.part("prefix") == "10.0.0.0/16"}
    assert on_path <= explained
    if cause is not None:
        assert cause.drifts


def test_healthy_world_gives_a_whole_path_with_evidence_on_every_hop() -> None:
    (tr,) = trace(target(), observation())
    assert tr.verdict is Verdict.OK
    onprem = tr.paths[0]
    assert [h.kind for h in onprem.hops] == [
        HopKind.ROUTE_SERVER,
        HopKind.PEERING,
        HopKind.NVA,
        HopKind.ROUTE_SERVER_LEARNED,
        HopKind.BRANCH_TO_BRANCH,
        HopKind.GATEWAY_LEARNED,
        HopKind.GATEWAY_ADVERTISED,
        HopKind.FIREWALL,
        HopKind.SUBNET_ROUTE,
    ]
    assert all(h.evidence for h in onprem.hops)
    learned = next(h for h in onprem.hops if h.kind is HopKind.ROUTE_SERVER_LEARNED)
    assert {e.instance for e in learned.evidence} == set(INST)
    assert learned.evidence[0].value == f"0.0.0.0/0 via {FW} path 65001"
    egress = onprem.hops[-1]
    assert "0.0.0.0/0 -> Internet (UDR default-internet in fw-rt)" in egress.evidence[0].value


def test_unreadable_learned_routes_make_the_hop_unknown_not_broken() -> None:
    obs = replace(observation(), learned={"nva1": Unknown("routes.learned", "nva1", "LRO failed")})
    (tr,) = trace(target(), obs)
    hop = next(h for h in tr.paths[0].hops if h.id == "learned:nva1")
    assert hop.verdict is Verdict.UNKNOWN
    assert [d.code for d in hop.drifts] == [C.OBSERVATION_FAILED]
    assert tr.paths[0].verdict is Verdict.UNKNOWN and tr.paths[0].root_cause is None


def test_a_later_hop_is_the_root_cause_when_the_cause_table_says_it_explains_the_first() -> None:
    # The firewall failed and came back with a new IP: the NVA's stale next hop is the first broken
    # hop, but the cards group it under the failed firewall (reconciler.causes); the trace agrees.
    case = next(c for c in CASES if c[0] == "firewall redeployed with new IP")
    obs = replace(case[2](observation()), firewall=Firewall("fw-hub", "Failed", "10.0.3.5"))
    (tr,) = trace(target(), obs)
    onprem = next(p for p in tr.paths if p.source == ONPREM)
    assert next(h for h in onprem.hops if h.verdict is Verdict.BROKEN).id == "nva:nva1"
    assert onprem.root_cause is not None and onprem.root_cause.id == "firewall"


def test_vpn_hub_traces_each_half_and_its_firewall_subnet_loops_without_the_half_udrs() -> None:
    halves = tuple(Route(p, FW, "65001", "EBgp", "10.0.1.6") for p in ("0.0.0.0/1", "128.0.0.0/1"))
    t = target(prefixes=["0.0.0.0/1", "128.0.0.0/1"], gateways=[])
    obs = replace(observation(), learned={"nva1": {INST[0]: halves, INST[1]: halves}}, gateways={}, agents={})
    traces = trace(t, obs)
    assert [tr.prefix for tr in traces] == ["0.0.0.0/1", "128.0.0.0/1"]
    for tr in traces:
        (path,) = tr.paths
        assert path.source == FW_SUBNET
        assert path.root_cause is not None and path.root_cause.id == EGRESS
    (whole,) = trace(t, obs, prefix="0.0.0.0/0")
    assert whole.verdict is Verdict.BROKEN


def test_two_watched_subnets_of_the_same_name_in_different_vnets_each_get_their_own_hop() -> None:
    # Spokes often share subnet names ("workload"); the hop was found by subnet name alone, so the
    # second VNet's path showed the first VNet's verdict (here: spoke2's broken UDR read as healthy).
    def watched(vnet: str) -> dict[str, Any]:
        return {"vnet": vnet, "subnet": "workload", "routes": [{"prefix": "0.0.0.0/0", "next_hop_type": "Internet"}]}

    t = target(subnets=[watched("spoke1"), watched("spoke2")])
    good = (RouteEntry("default-internet", "0.0.0.0/0", "Internet", None),)
    bad = (RouteEntry("default-internet", "0.0.0.0/0", "None", None),)
    obs = observation(
        subnets={
            "spoke1:workload": SubnetRouting("spoke1", "workload", "rt1", good, False),
            "spoke2:workload": SubnetRouting("spoke2", "workload", "rt2", bad, False),
        }
    )
    [tr] = trace(t, obs)
    hops = {p.source: p.hops for p in tr.paths if p.source.endswith(":workload")}
    assert [h.id for h in hops["spoke1:workload"]] == ["subnet:spoke1:workload"]
    assert [h.id for h in hops["spoke2:workload"]] == ["subnet:spoke2:workload"]
    assert hops["spoke1:workload"][0].verdict is Verdict.OK
    assert hops["spoke2:workload"][0].verdict is Verdict.BROKEN
