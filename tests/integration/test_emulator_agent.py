"""The emulated NVA agents keep the agent contract (schemas/agent.openapi.json) and move the world."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from emulator import Announcement, ArmEmulator, Fault
from emulator import agent as emulated
from tests.fixtures.emulator import network_client, tls_context

NVA = "10.0.1.6"
INTENT: dict[str, Any] = {
    "local_asn": 65001,
    "neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.2.5", "asn": 65515}],
    "prefixes": ["0.0.0.0/0"],
    "next_hop": "10.0.3.4",
    "dry_run": False,
}


@pytest.fixture
async def agent(emulator: ArmEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=emulator.agent_url(NVA),
        verify=tls_context(emulator),
        headers={"Authorization": "Bearer demo-token"},
    ) as client:
        yield client


def intent(**changes: Any) -> dict[str, Any]:
    return {**INTENT, **changes}


async def test_health_needs_no_token(emulator: ArmEmulator) -> None:
    async with httpx.AsyncClient(verify=tls_context(emulator)) as http:
        resp = await http.get(f"{emulator.agent_url(NVA)}/v1/health")
    assert resp.json() == {"status": "ok", "frr": True}


async def test_state_of_the_healthy_lab(agent: httpx.AsyncClient) -> None:
    state = (await agent.get("/v1/state")).json()
    assert state["local_asn"] == 65001
    assert state["router_id"] == NVA
    assert state["config_hash"].startswith("sha256:") and len(state["config_hash"]) == 7 + 64
    assert [(n["ip"], n["remote_asn"], n["state"]) for n in state["neighbors"]] == [
        ("10.0.2.4", 65515, "Established"),
        ("10.0.2.5", 65515, "Established"),
    ]
    assert state["neighbors"][0]["advertised"] == [{"prefix": "0.0.0.0/0", "next_hop": "10.0.3.4", "as_path": "65001"}]


async def test_state_hides_65515_paths_only_while_the_out_filter_is_intact(
    agent: httpx.AsyncClient, emulator: ArmEmulator
) -> None:
    nva = emulator.world.nva(NVA)
    nva.announcements = [*nva.announcements, Announcement("10.20.10.0/24", "10.0.3.4", "65001 65515")]
    intact = (await agent.get("/v1/state")).json()["neighbors"][0]["advertised"]
    nva.out_filter = False
    broken = (await agent.get("/v1/state")).json()["neighbors"][0]["advertised"]
    assert [r["prefix"] for r in intact] == ["0.0.0.0/0"]
    assert [r["prefix"] for r in broken] == ["0.0.0.0/0", "10.20.10.0/24"]


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_state_and_intent_need_the_nva_token(emulator: ArmEmulator, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=emulator.agent_url(NVA), verify=tls_context(emulator)) as http:
        state = await http.get("/v1/state", headers=headers)
        put = await http.put("/v1/bgp/intent", json=INTENT, headers=headers)
    assert state.status_code == put.status_code == 401
    assert state.json() == {"detail": "missing or wrong bearer token"}
    assert emulator.world.nva(NVA).announcements[0].next_hop == "10.0.3.4"


async def test_intent_fixes_a_wrong_next_hop_and_ars_learns_it(agent: httpx.AsyncClient, emulator: ArmEmulator) -> None:
    emulator.world.nva(NVA).announcements = [Announcement("0.0.0.0/0", NVA, "65001")]
    result = (await agent.put("/v1/bgp/intent", json=INTENT)).json()
    assert (result["changed"], result["applied"], result["rolled_back"], result["dry_run"]) == (
        True,
        True,
        False,
        False,
    )
    assert any(c.startswith("+ ") and "set ip next-hop 10.0.3.4" in c for c in result["changes"])
    assert result["state"]["neighbors"][1]["advertised"][0]["next_hop"] == "10.0.3.4"
    async with network_client(emulator) as client:
        poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        routes = await poller.result()
    assert {r.next_hop for rs in routes.values() for r in rs} == {"10.0.3.4"}
    assert [r.op for r in emulator.requests].count("agent.intent") == 1


async def test_second_identical_intent_changes_nothing(agent: httpx.AsyncClient, emulator: ArmEmulator) -> None:
    emulator.world.nva(NVA).announcements = []
    first = (await agent.put("/v1/bgp/intent", json=INTENT)).json()
    second = (await agent.put("/v1/bgp/intent", json=INTENT)).json()
    assert first["changes"] == [
        "+ network 0.0.0.0/0 route-map nva-agent-originate",
        "+ route-map nva-agent-ars-out permit 10 | match 0.0.0.0/0 | set ip next-hop 10.0.3.4",
    ]
    assert (second["changed"], second["applied"], second["changes"]) == (False, False, [])
    assert second["state"]["config_hash"] == first["state"]["config_hash"]


async def test_dry_run_reports_changes_without_applying(agent: httpx.AsyncClient, emulator: ArmEmulator) -> None:
    emulator.world.nva(NVA).announcements = []
    result = (await agent.put("/v1/bgp/intent", json=intent(dry_run=True))).json()
    assert (result["changed"], result["applied"], result["dry_run"]) == (True, False, True)
    assert "+ network 0.0.0.0/0 route-map nva-agent-originate" in result["changes"]
    assert emulator.world.nva(NVA).announcements == []


async def test_intent_adds_a_lost_neighbor_and_reconnects_that_instance(
    agent: httpx.AsyncClient, emulator: ArmEmulator
) -> None:
    conn = emulator.world.route_server("sub-1", "rg-hub", "ars-hub").connection("nva1")
    assert conn is not None
    conn.connected_instances = [0]
    before = (await agent.get("/v1/state")).json()
    result = (await agent.put("/v1/bgp/intent", json=INTENT)).json()
    assert [n["ip"] for n in before["neighbors"]] == ["10.0.2.4"]
    assert "+ neighbor 10.0.2.5 remote-as 65515" in result["changes"]
    assert result["applied"] is True
    assert conn.connected_instances == [0, 1]


async def test_intent_drops_65515_paths_and_restores_the_out_filter(
    agent: httpx.AsyncClient, emulator: ArmEmulator
) -> None:
    nva = emulator.world.nva(NVA)
    nva.out_filter = False
    nva.announcements = [*nva.announcements, Announcement("10.20.10.0/24", "10.0.3.4", "65001 65515")]
    result = (await agent.put("/v1/bgp/intent", json=INTENT)).json()
    assert result["applied"] is True
    assert "- network 10.20.10.0/24 route-map nva-agent-originate" in result["changes"]
    assert nva.out_filter is True
    assert [a.prefix for a in nva.announcements] == ["0.0.0.0/0"]


async def test_intent_for_a_neighbor_ars_does_not_know_is_rolled_back(
    agent: httpx.AsyncClient, emulator: ArmEmulator
) -> None:
    emulator.world.nva(NVA).agent_policy = None  # like the real agent's --lab: 10.0.2.6 is not in the policy
    body = intent(neighbors=[*INTENT["neighbors"], {"ip": "10.0.2.6", "asn": 65515}], prefixes=["0.0.0.0/1"])
    result = (await agent.put("/v1/bgp/intent", json=body)).json()
    assert (result["changed"], result["applied"], result["rolled_back"]) == (True, False, True)
    assert "10.0.2.6" in result["message"]
    assert [a.prefix for a in emulator.world.nva(NVA).announcements] == ["0.0.0.0/0"]


async def test_other_local_asn_is_a_409_conflict(agent: httpx.AsyncClient) -> None:
    resp = await agent.put("/v1/bgp/intent", json=intent(local_asn=65002))
    assert resp.status_code == 409
    assert "65002" in resp.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        intent(extra=1),
        intent(neighbors=[{"ip": "10.0.2.4", "asn": 65515, "password": "x"}]),
        intent(neighbors=[{"ip": "10.0.2.999", "asn": 65515}]),
        intent(neighbors=[{"ip": "10.0.2.4; reboot", "asn": 65515}]),
        intent(neighbors=[]),
        intent(prefixes=["0.0.0.1/0"]),
        intent(prefixes=["0.0.0.0"]),
        intent(prefixes=["0.0.0.0/0", "0.0.0.0/0"]),
        intent(local_asn=0),
        intent(local_asn=65515),
        intent(local_asn="65001"),
        intent(neighbors=[{"ip": "10.0.2.4", "asn": 2**32}]),
        intent(next_hop="fw"),
        intent(dry_run="yes"),
        {k: v for k, v in INTENT.items() if k != "prefixes"},
    ],
)
async def test_invalid_intent_is_422_and_changes_nothing(
    agent: httpx.AsyncClient, emulator: ArmEmulator, body: dict[str, Any]
) -> None:
    before = emulator.world.to_dict()
    resp = await agent.put("/v1/bgp/intent", json=body)
    assert resp.status_code == 422
    assert isinstance(resp.json()["detail"], list)
    assert emulator.world.to_dict() == before


async def test_body_that_is_not_json_is_422(agent: httpx.AsyncClient) -> None:
    resp = await agent.put("/v1/bgp/intent", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422


async def test_concurrent_intents_are_serialised(agent: httpx.AsyncClient, emulator: ArmEmulator) -> None:
    emulator.world.nva(NVA).announcements = []
    results = await asyncio.gather(*(agent.put("/v1/bgp/intent", json=INTENT) for _ in range(8)))
    bodies = [r.json() for r in results]
    assert sum(b["applied"] for b in bodies) == 1
    assert [r.op for r in emulator.requests].count("agent.intent") == 8


async def test_agent_faults_and_unknown_nva(agent: httpx.AsyncClient, emulator: ArmEmulator) -> None:
    emulator.inject("agent.state", Fault.error(status=503, count=1))
    assert (await agent.get("/v1/state")).status_code == 503
    assert (await agent.get("/v1/state")).status_code == 200
    async with httpx.AsyncClient(verify=tls_context(emulator)) as http:
        assert (await http.get(f"{emulator.agent_url('10.9.9.9')}/v1/health")).status_code == 404


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"prefixes": ["0.0.0.0/0", "192.0.2.0/24"]}, "prefixes"),
        ({"next_hop": "10.9.9.9"}, "next_hops"),
        ({"neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.2.9", "asn": 65515}]}, "neighbors"),
        ({"neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.2.5", "asn": 65001}]}, "no-local-asn-neighbor"),
    ],
    ids=["prefix", "next-hop", "neighbor", "local-asn-neighbor"],
)
async def test_an_intent_outside_the_world_policy_is_403_naming_the_rule_and_changes_nothing(
    agent: httpx.AsyncClient, emulator: ArmEmulator, change: dict[str, Any], rule: str
) -> None:
    before = emulated.state(emulator.world, emulator.world.nva(NVA), 0)
    resp = await agent.put("/v1/bgp/intent", json=intent(**change))
    assert resp.status_code == 403
    assert resp.json()["rule"] == rule and resp.json()["detail"]
    assert emulated.state(emulator.world, emulator.world.nva(NVA), 0) == before
