"""Route Server's documented limits and ASN rules, in the desired state, the diff and the emulator's world.

Source: the Azure Route Server FAQ (ASNs; limits include of 2025-02-07), cited in `reconciler/asn.py`
and `reconciler/desired.py`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import yaml

from emulator import World, WorldError
from reconciler import desired
from reconciler.asn import RESERVED_ASNS, peer_asn_problem
from reconciler.diff import diff
from reconciler.drift import DriftCode
from reconciler.errors import DesiredStateError
from reconciler.observed import Gateway, Observation, Route
from tests.unit.factories import FW, INST, default_route, observation, target

PEER = """
version: 1
targets:
  - name: hub
    subscription_id: sub-1
    resource_group: rg
    route_server: ars
    firewall: {name: fw}
    peers: [{name: nva1, ip: 10.0.1.6, asn: ASN}]
"""


def learned_routes(count: int) -> Observation:
    """The healthy world with the NVA sending `count` routes to both instances."""
    extra = tuple(Route(f"10.{i // 256}.{i % 256}.0/24", FW, "65001", "EBgp", "10.0.1.6") for i in range(count - 1))
    routes = (default_route(), *extra)
    return replace(observation(), learned={"nva1": {INST[0]: routes, INST[1]: routes}})


def advertised_to_circuit(count: int) -> Observation:
    """The healthy world with the ExpressRoute gateway advertising `count` routes to the MSEE."""
    base = observation()
    gw = base.gateways["ergw"]
    assert isinstance(gw, Gateway)
    vnet = (Route(f"10.{i // 256}.{i % 256}.0/24", "10.0.0.4", "65515") for i in range(count - 1))
    routes = (Route("0.0.0.0/0", FW, "65515-65001"), *vnet)
    return replace(base, gateways={"ergw": replace(gw, advertised={"10.0.0.12": routes})})


def limit_risks(t: desired.Target, obs: Observation) -> set[str]:
    return {d.subject for d in diff(t, obs) if d.code == DriftCode.ROUTE_LIMIT_RISK}


# ---- routes per peer: 4,000 ------------------------------------------------------------------------


def test_a_peer_sending_a_thousand_routes_is_far_from_the_4000_limit() -> None:
    # Was a false ROUTE_LIMIT_RISK: the old limit of 1,000 per peer is not the documented one.
    assert limit_risks(target(), learned_routes(1000)) == set()


def test_a_peer_near_4000_routes_is_a_limit_risk_naming_the_real_limit() -> None:
    drifts = [d for d in diff(target(), learned_routes(3600)) if d.code == DriftCode.ROUTE_LIMIT_RISK]
    assert [d.subject for d in drifts] == ["peer=nva1"]
    assert "4000" in drifts[0].message


def test_the_peer_warning_threshold_may_be_set_up_to_the_documented_limit() -> None:
    assert target(route_limit_warn=4000).route_limit_warn == 4000
    with pytest.raises(ValueError, match="less than or equal to 4000"):
        target(route_limit_warn=4001)


# ---- routes toward the ExpressRoute circuit: 1,000 -------------------------------------------------


def test_an_expressroute_gateway_near_1000_advertised_routes_is_a_limit_risk() -> None:
    drifts = [d for d in diff(target(), advertised_to_circuit(950)) if d.code == DriftCode.ROUTE_LIMIT_RISK]
    assert [d.subject for d in drifts] == ["gateway=ergw/onprem=10.0.0.12"]
    assert "1000" in drifts[0].message and drifts[0].observed == "950"


def test_a_gateway_well_under_1000_advertised_routes_is_fine() -> None:
    assert limit_risks(target(), advertised_to_circuit(899)) == set()


def test_a_vpn_gateway_is_not_held_to_the_expressroute_limit() -> None:
    t = target(
        prefixes=["0.0.0.0/1", "128.0.0.0/1"],
        gateways=[{"name": "ergw", "type": "Vpn", "onprem_peers": ["10.0.0.12"]}],
    )
    assert limit_risks(t, advertised_to_circuit(999)) == set()


def test_the_expressroute_threshold_is_capped_at_1000() -> None:
    assert target(expressroute_route_limit_warn=1000).expressroute_route_limit_warn == 1000
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        target(expressroute_route_limit_warn=1001)


# ---- ASNs: 16-bit only, not reserved ----------------------------------------------------------------

REFUSED = [0, 8074, 8075, 12076, 23456, 64496, 64511, 65515, 65517, 65520, 65535, 65540, 65551, 65536, 4200000000]
ACCEPTED = [1, 64512, 65001, 65516, 65534, 7224]


@pytest.mark.parametrize("asn", REFUSED)
def test_a_reserved_or_32_bit_peer_asn_is_refused_in_the_desired_state(asn: int) -> None:
    with pytest.raises(DesiredStateError) as info:
        desired.loads(PEER.replace("ASN", str(asn)), "d.yaml")
    assert [p for p, _ in info.value.problems] == ["targets[0].peers[0].asn"]
    assert "cannot peer with Route Server" in str(info.value)


@pytest.mark.parametrize("asn", ACCEPTED)
def test_a_usable_16_bit_peer_asn_is_accepted(asn: int) -> None:
    assert desired.loads(PEER.replace("ASN", str(asn)), "d.yaml").targets[0].peers[0].asn == asn


def test_every_32_bit_asn_is_refused_with_the_16_bit_reason() -> None:
    problem = peer_asn_problem(4_200_000_000)
    assert problem is not None and "16-bit" in problem


def test_the_reserved_list_is_the_faq_list() -> None:
    # FAQ: Azure 8074, 8075, 12076, 65515, 65517-65520; IANA 23456, 64496-64511, 65535-65551 (+ 0, RFC 7607).
    ranges = {(first, last) for first, last, _ in RESERVED_ASNS}
    assert ranges == {
        (0, 0),
        (8074, 8075),
        (12076, 12076),
        (23456, 23456),
        (64496, 64511),
        (65515, 65515),
        (65517, 65520),
        (65535, 65551),
    }


def world(nva_asn: int = 65001, peer_asn: int = 65001) -> dict[str, Any]:
    return {
        "route_servers": [
            {
                "subscription": "s",
                "resource_group": "g",
                "name": "ars",
                "connections": [{"name": "nva1", "peer_ip": "10.0.1.6", "peer_asn": peer_asn}],
            }
        ],
        "nvas": [{"ip": "10.0.1.6", "asn": nva_asn}],
    }


def test_the_emulator_world_accepts_a_usable_asn() -> None:
    assert World.from_dict(world()).nvas[0].asn == 65001


@pytest.mark.parametrize("asn", [65535, 65551, 4200000000, 65515, 12076])
def test_the_emulator_refuses_a_connection_azure_would_refuse(asn: int) -> None:
    with pytest.raises(WorldError, match=r"connections\[0\]\.peer_asn: ASN .* cannot peer with Route Server"):
        World.from_dict(world(peer_asn=asn))


@pytest.mark.parametrize("asn", [65535, 4200000000])
def test_the_emulator_refuses_an_nva_that_could_not_peer(asn: int) -> None:
    with pytest.raises(WorldError, match=r"nvas\[0\]\.asn: ASN .* cannot peer"):
        World.from_dict(world(nva_asn=asn))


def test_the_shipped_worlds_and_examples_keep_to_the_rules() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "emulator" / "worlds").glob("*.yaml")):
        World.from_dict(yaml.safe_load(path.read_text()))
    for path in sorted((root / "schemas" / "examples").glob("*.yaml")):
        desired.load(path)


@pytest.mark.parametrize("asn", [8074, 12076, 65535, 4200000000])
def test_the_agent_refuses_a_local_asn_route_server_would_not_peer_with(asn: int) -> None:
    # The agent kept its own shorter list (no Azure public ASNs, 32-bit allowed); now the one list.
    from pydantic import ValidationError

    from nva_agent.models import BgpIntent

    intent = {"local_asn": asn, "neighbors": [{"ip": "10.0.2.4", "asn": 65515}], "prefixes": ["0.0.0.0/0"]}
    with pytest.raises(ValidationError, match="cannot peer with Route Server"):
        BgpIntent.model_validate(intent)
    assert BgpIntent.model_validate({**intent, "local_asn": 65001}).local_asn == 65001
