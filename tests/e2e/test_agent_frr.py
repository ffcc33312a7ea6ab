"""End to end on real FRR: from each broken NVA config, one intent brings both stand-in route
servers to hold 0.0.0.0/0 via the firewall with AS path 65001; a rollback, and FRR outages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.agent_client import AgentClient
from reconciler.errors import TransientError
from reconciler.plan import Intent
from tests.fixtures.frr import OPERATOR_UNRELATED_LINES, FrrLabHandle, lab_policy, nva_config, wait_until

pytestmark = pytest.mark.frr

FW = "10.0.3.4"
NVA = "10.0.1.4"
Seen = Callable[[FrrLabHandle], bool]


def _both(pred: Callable[[dict[str, dict[str, str]]], bool]) -> Seen:
    return lambda lab: all(pred(lab.received(rs)) for rs in (0, 1))


# Each broken config, and what the route servers see while it is broken (so the test proves
# the drift was real before the agent fixed it).
BROKEN: dict[str, tuple[dict[str, Any], Seen]] = {
    "no_network_statement": ({"announce": False}, _both(lambda r: "0.0.0.0/0" not in r)),
    "next_hop_not_set": ({"next_hop": None}, _both(lambda r: r.get("0.0.0.0/0", {}).get("next_hop") == NVA)),
    "wrong_firewall_ip": (
        {"next_hop": "10.0.3.5"},
        _both(lambda r: r.get("0.0.0.0/0", {}).get("next_hop") == "10.0.3.5"),
    ),
    "neighbor_missing": (
        {"neighbors": ("10.0.2.4",)},
        lambda lab: lab.received(1) == {} and "0.0.0.0/0" in lab.received(0),
    ),
    "out_filter_lost": (
        {"out_filter": False},
        _both(lambda r: r.get("10.0.0.0/16", {}).get("as_path") == "65001 65515"),
    ),
}


def _route_servers_hold_only_the_default(lab: FrrLabHandle) -> bool:
    want = {"0.0.0.0/0": {"next_hop": FW, "as_path": "65001"}}
    return all(lab.received(rs) == want and lab.lab.holds_default(rs) for rs in (0, 1))


def _put(lab: FrrLabHandle, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.put(
        f"{lab.agent_url}/v1/bgp/intent",
        json=body,
        headers={"Authorization": f"Bearer {lab.agent_token}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_one_intent_repairs_a_broken_nva_and_a_second_changes_nothing(frr_lab: FrrLabHandle, case: str) -> None:
    broken, seen = BROKEN[case]
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr, **broken))
    wait_until(lambda: seen(frr_lab), 10, f"the route servers to see the {case} drift")

    first = _put(frr_lab, frr_lab.intent_body())
    assert (first["changed"], first["applied"], first["rolled_back"]) == (True, True, False), first["message"]
    wait_until(lambda: _route_servers_hold_only_the_default(frr_lab), 5, "both route servers to hold the route")

    second = _put(frr_lab, frr_lab.intent_body())
    assert (second["changed"], second["applied"], second["changes"]) == (False, False, [])
    assert "nothing applied" in second["message"]

    running = [ln.rstrip() for ln in frr_lab.running_config().splitlines()]
    for line in OPERATOR_UNRELATED_LINES:
        assert line in running or f" {line}" in running or f"  {line}" in running, f"operator line {line!r} lost"


def test_the_repairs_are_listed_as_config_changes(frr_lab: FrrLabHandle) -> None:
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr, next_hop="10.0.3.5", announce=False))
    result = _put(frr_lab, frr_lab.intent_body())
    assert "+ network 0.0.0.0/0 route-map nva-agent-originate" in result["changes"]
    assert "+ route-map nva-agent-ars-out permit 10 | set ip next-hop 10.0.3.4" in result["changes"]
    assert "- route-map nva-agent-ars-out permit 10 | set ip next-hop 10.0.3.5" in result["changes"]


def test_an_intent_that_does_not_verify_is_rolled_back(frr_lab: FrrLabHandle) -> None:
    _put(frr_lab, frr_lab.intent_body())
    before = frr_lab.running_config()
    neighbors = [{"ip": ip, "asn": 65515} for ip in (*frr_lab.addr.rs_ips, "10.0.2.6")]  # nobody at .6
    # an agent that gives up on the read-back after 2 s instead of 10, to keep the suite fast
    impatient = frr_lab.lab.start_agent(
        frr_lab.agent_token, {"NVA_AGENT_VERIFY_TIMEOUT": "2"}, policy=lab_policy(frr_lab.addr, ("10.0.2.6",))
    )
    try:
        resp = httpx.put(
            f"{impatient.url}/v1/bgp/intent",
            json=frr_lab.intent_body(neighbors=neighbors),
            headers={"Authorization": f"Bearer {impatient.token}"},
            timeout=30,
        )
    finally:
        impatient.stop()
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert (result["changed"], result["applied"], result["rolled_back"]) == (True, False, True)
    assert "10.0.2.6" in result["message"]
    assert frr_lab.running_config() == before
    wait_until(lambda: _route_servers_hold_only_the_default(frr_lab), 5, "both route servers to keep the route")


def test_another_local_as_is_a_409_and_changes_nothing(frr_lab: FrrLabHandle) -> None:
    before = frr_lab.running_config()
    resp = httpx.put(
        f"{frr_lab.agent_url}/v1/bgp/intent",
        json=frr_lab.intent_body(local_asn=65002),
        headers={"Authorization": f"Bearer {frr_lab.agent_token}"},
        timeout=30,
    )
    assert resp.status_code == 409
    assert "65001" in resp.json()["detail"]
    assert frr_lab.running_config() == before


def test_learned_routes_read_from_a_route_server_look_like_arm(frr_lab: FrrLabHandle) -> None:
    _put(frr_lab, frr_lab.intent_body())
    wait_until(lambda: _route_servers_hold_only_the_default(frr_lab), 5, "both route servers to hold the route")
    assert frr_lab.learned_routes(1) == [
        {"localAddress": "10.0.2.5", "network": "0.0.0.0/0", "nextHop": FW, "sourcePeer": NVA,
         "origin": "EBgp", "asPath": "65001", "weight": 32768},
    ]  # fmt: skip
    assert frr_lab.learned_routes(2) is None


async def test_vtysh_that_cannot_reach_frr_gives_503_and_a_transient_error(frr_lab: FrrLabHandle) -> None:
    agent = frr_lab.lab.start_agent(frr_lab.agent_token, {"NVA_AGENT_FRR_VTY_SOCKET": "/nonexistent"})
    try:
        health = httpx.get(f"{agent.url}/v1/health", timeout=10)
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "frr": False, "reason": "vty_unreachable"}
        async with AgentClient(agent.url, agent.token, verify=False, allow_http=True) as client:
            with pytest.raises(TransientError, match="503"):
                await client.state()
    finally:
        agent.stop()


async def test_bgpd_stopped_gives_503_and_a_transient_error(frr_lab: FrrLabHandle) -> None:
    _put(frr_lab, frr_lab.intent_body())
    before = frr_lab.lab.vtysh("nva", "show running-config")
    frr_lab.lab.stop_nva_bgpd()
    try:
        health = httpx.get(f"{frr_lab.agent_url}/v1/health", timeout=10)
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "frr": False, "reason": "bgpd_not_running"}
        intent = Intent(65001, tuple((ip, 65515) for ip in frr_lab.addr.rs_ips), ("0.0.0.0/0",), FW)
        async with AgentClient(frr_lab.agent_url, frr_lab.agent_token, verify=False, allow_http=True) as client:
            with pytest.raises(TransientError, match="503"):
                await client.apply_intent(intent)
            assert await client.health() is False
    finally:
        frr_lab.lab.start_nva_bgpd()
    frr_lab.lab.wait_converged(15)
    assert frr_lab.lab.vtysh("nva", "show running-config") == before
