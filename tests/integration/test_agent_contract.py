"""The NVA agent HTTP contract, run against every implementation of it.

Each implementation is an `AgentEndpoint` built by one function in ENDPOINTS; to add one, add a
builder and a param. Today: the real agent on FRR (`frr_lab`) and the ARM emulator's agent
(`emulator`, at `{base_url}/agents/{nva_ip}`). Tests speak HTTP (raw httpx, and the
reconciler's AgentClient) and assert only what the contract promises.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from reconciler.agent_client import AgentClient
from reconciler.errors import PermanentError
from reconciler.plan import Intent


@dataclass(frozen=True)
class AgentEndpoint:
    kind: str
    base_url: str
    token: str
    verify: str | bool
    local_asn: int
    neighbors: tuple[tuple[str, int], ...]
    firewall_ip: str
    known_gaps: frozenset[str] = frozenset()
    """Contract points this implementation does not keep yet: those tests xfail, with the reason."""

    def intent(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "local_asn": self.local_asn,
            "neighbors": [{"ip": ip, "asn": asn} for ip, asn in self.neighbors],
            "prefixes": ["0.0.0.0/0"],
            "next_hop": self.firewall_ip,
            "dry_run": False,
        }
        body.update(overrides)
        return body

    def design(self) -> Intent:
        return Intent(self.local_asn, self.neighbors, ("0.0.0.0/0",), self.firewall_ip)

    def http(self) -> httpx.Client:
        verify = ssl.create_default_context(cafile=self.verify) if isinstance(self.verify, str) else self.verify
        return httpx.Client(base_url=self.base_url, verify=verify, timeout=30)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> AgentClient:
        return AgentClient(self.base_url, self.token, verify=self.verify, timeout=30, allow_http=self.kind == "frr")

    def gap(self, name: str) -> None:
        if name in self.known_gaps:
            pytest.xfail(f"{self.kind} agent does not implement {name!r} yet")


def _frr(request: pytest.FixtureRequest) -> Iterator[AgentEndpoint]:
    lab = request.getfixturevalue("frr_lab")
    addr = lab.addr
    ep = AgentEndpoint(
        kind="frr",
        base_url=lab.agent_url,
        token=lab.agent_token,
        verify=False,  # the lab agent serves plain HTTP on loopback
        local_asn=addr.nva_asn,
        neighbors=tuple((ip, addr.rs_asn) for ip in addr.rs_ips),
        firewall_ip=addr.firewall_ip,
    )
    yield ep
    # the lab is shared by the session: leave the NVA on the design intent for the next test
    with ep.http() as http:
        assert http.put("/v1/bgp/intent", json=ep.intent(), headers=ep.auth()).status_code == 200


def _emulator(request: pytest.FixtureRequest) -> Iterator[AgentEndpoint]:
    emu = request.getfixturevalue("emulator")
    nva = emu.world.nvas[0]
    rs = emu.world.route_servers[0]
    yield AgentEndpoint(
        kind="emulator",
        base_url=emu.agent_url(nva.ip),
        token=nva.agent_token,
        verify=emu.ca_file,
        local_asn=nva.asn,
        neighbors=tuple((ip, rs.asn) for ip in rs.ips),
        firewall_ip=emu.world.firewalls[0].private_ip,
        known_gaps=frozenset(),
    )


ENDPOINTS: dict[str, Callable[[pytest.FixtureRequest], Iterator[AgentEndpoint]]] = {
    "frr": _frr,
    "emulator": _emulator,
}


@pytest.fixture(params=[pytest.param("frr", marks=pytest.mark.frr), "emulator"])
def agent_endpoint(request: pytest.FixtureRequest) -> Iterator[AgentEndpoint]:
    yield from ENDPOINTS[request.param](request)


# ------------------------------------------------------------------------------- health / auth
def test_health_needs_no_token_and_says_frr_is_up(agent_endpoint: AgentEndpoint) -> None:
    with agent_endpoint.http() as http:
        resp = http.get("/v1/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "frr": True}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic Zm9vOmJhcg=="}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_state_and_intent_refuse_a_missing_or_wrong_token(
    agent_endpoint: AgentEndpoint, headers: dict[str, str]
) -> None:
    with agent_endpoint.http() as http:
        state = http.get("/v1/state", headers=headers)
        intent = http.put("/v1/bgp/intent", json=agent_endpoint.intent(), headers=headers)
    for resp in (state, intent):
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/json")
        assert agent_endpoint.token not in resp.text


# ------------------------------------------------------------------------------- state / intent
async def test_state_lists_each_neighbor_with_what_it_is_sent(agent_endpoint: AgentEndpoint) -> None:
    async with agent_endpoint.client() as client:
        await client.apply_intent(agent_endpoint.design())
        state = await client.state()
    assert state.local_asn == agent_endpoint.local_asn
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", state.config_hash)
    for ip, asn in agent_endpoint.neighbors:
        n = state.neighbor(ip)
        assert n is not None, f"no neighbor {ip} in {state}"
        assert (n.remote_asn, n.state) == (asn, "Established")
        assert n.uptime_ms >= 0
        assert [(r.prefix, r.next_hop, r.as_path) for r in n.advertised] == [
            ("0.0.0.0/0", agent_endpoint.firewall_ip, str(agent_endpoint.local_asn))
        ]


async def test_a_repeated_intent_changes_nothing_and_says_so(agent_endpoint: AgentEndpoint) -> None:
    async with agent_endpoint.client() as client:
        await client.apply_intent(agent_endpoint.design())
        before = await client.state()
        again = await client.apply_intent(agent_endpoint.design())
    assert (again.changed, again.applied, again.rolled_back, again.dry_run) == (False, False, False, False)
    assert again.changes == ()
    assert again.state.config_hash == before.config_hash


async def test_a_dry_run_lists_changes_and_applies_none(agent_endpoint: AgentEndpoint) -> None:
    other_fw = "10.0.3.5"
    async with agent_endpoint.client() as client:
        await client.apply_intent(agent_endpoint.design())
        before = await client.state()
        intent = Intent(agent_endpoint.local_asn, agent_endpoint.neighbors, ("0.0.0.0/0",), other_fw)
        dry = await client.apply_intent(intent, dry_run=True)
        after = await client.state()
    assert (dry.changed, dry.applied, dry.dry_run) == (True, False, True)
    assert any(other_fw in c for c in dry.changes), dry.changes
    agent_endpoint.gap("changes_as_plus_minus_lines")
    assert all(c.startswith(("+ ", "- ")) for c in dry.changes), dry.changes
    assert after.config_hash == before.config_hash
    assert all(r.next_hop == agent_endpoint.firewall_ip for n in after.neighbors for r in n.advertised)


async def test_withdraw_then_announce_again(agent_endpoint: AgentEndpoint) -> None:
    ep = agent_endpoint
    async with ep.client() as client:
        gone = await client.apply_intent(Intent(ep.local_asn, ep.neighbors, (), ep.firewall_ip))
        back = await client.apply_intent(ep.design())
    assert (gone.changed, gone.applied) == (True, True), gone.message
    assert any(c.startswith("- network 0.0.0.0/0") for c in gone.changes) or ep.kind != "frr", gone.changes
    for ip, _ in ep.neighbors:
        n = gone.state.neighbor(ip)
        assert n is not None and n.advertised == ()
    assert (back.changed, back.applied) == (True, True), back.message
    for ip, _ in ep.neighbors:
        n = back.state.neighbor(ip)
        assert n is not None and [r.prefix for r in n.advertised] == ["0.0.0.0/0"]


# ------------------------------------------------------------------------------- bad requests
BAD_INTENTS: dict[str, dict[str, Any]] = {
    "unknown_field": {"extra": 1},
    "neighbor_unknown_field": {"neighbors": [{"ip": "10.0.2.4", "asn": 65515, "password": "x"}]},
    "neighbor_ip_not_ip": {"neighbors": [{"ip": "ars-0", "asn": 65515}]},
    "neighbor_ip_injection": {"neighbors": [{"ip": "10.0.2.4\nno router bgp 65001", "asn": 65515}]},
    "prefix_semicolon": {"prefixes": ["0.0.0.0/0; reboot"]},
    "prefix_newline": {"prefixes": ["0.0.0.0/0\nno router bgp 65001"]},
    "prefix_bang": {"prefixes": ["0.0.0.0/0 !"]},
    "prefix_not_a_prefix": {"prefixes": ["default"]},
    "prefix_host_bits": {"prefixes": ["10.0.0.1/8"]},
    "next_hop_not_ip": {"next_hop": "fw-hub"},
    "next_hop_injection": {"next_hop": "10.0.3.4\nend"},
    "local_asn_zero": {"local_asn": 0},
    "local_asn_too_big": {"local_asn": 4_294_967_296},
    "neighbor_asn_negative": {"neighbors": [{"ip": "10.0.2.4", "asn": -1}]},
    "local_asn_string": {"local_asn": "65001"},
    "prefixes_not_list": {"prefixes": "0.0.0.0/0"},
    "dry_run_not_bool": {"dry_run": "yes"},
}


@pytest.mark.parametrize("case", sorted(BAD_INTENTS))
def test_a_bad_intent_is_refused_with_422(agent_endpoint: AgentEndpoint, case: str) -> None:
    with agent_endpoint.http() as http:
        resp = http.put(
            "/v1/bgp/intent", json=agent_endpoint.intent(**BAD_INTENTS[case]), headers=agent_endpoint.auth()
        )
    assert resp.status_code == 422, resp.text


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_a_non_finite_number_is_refused_with_422_naming_where(agent_endpoint: AgentEndpoint, number: str) -> None:
    # Python's json reads these (FastAPI's too); echoing them back in a 422 is not JSON, which once
    # made the real agent answer 500 (found by the hostile-intent property test).
    headers = {**agent_endpoint.auth(), "Content-Type": "application/json"}
    body = json.dumps(agent_endpoint.intent(local_asn=0)).replace('"local_asn": 0', f'"local_asn": {number}')
    with agent_endpoint.http() as http:
        resp = http.put("/v1/bgp/intent", content=body.encode(), headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "local_asn"]


def test_a_reserved_local_asn_is_refused(agent_endpoint: AgentEndpoint) -> None:
    agent_endpoint.gap("reserved_local_asn")
    with agent_endpoint.http() as http:
        for asn in (23456, 65515, 64500):
            resp = http.put("/v1/bgp/intent", json=agent_endpoint.intent(local_asn=asn), headers=agent_endpoint.auth())
            assert resp.status_code == 422, (asn, resp.text)


def test_a_body_that_is_not_json_is_refused(agent_endpoint: AgentEndpoint) -> None:
    headers = {**agent_endpoint.auth(), "Content-Type": "application/json"}
    with agent_endpoint.http() as http:
        resp = http.put("/v1/bgp/intent", content=b'{"local_asn": 65001, ', headers=headers)
    assert 400 <= resp.status_code < 500


def test_a_huge_body_is_refused(agent_endpoint: AgentEndpoint) -> None:
    agent_endpoint.gap("body_size_limit")
    body = agent_endpoint.intent(prefixes=[f"10.{i // 256}.{i % 256}.0/24" for i in range(20_000)])
    with agent_endpoint.http() as http:
        resp = http.put("/v1/bgp/intent", json=body, headers=agent_endpoint.auth())
    assert 400 <= resp.status_code < 500  # the real agent answers 413 (tested with the agent)


async def test_the_client_raises_permanent_errors_for_auth_and_validation(
    agent_endpoint: AgentEndpoint,
) -> None:
    ep = agent_endpoint
    async with AgentClient(ep.base_url, "wrong-token-0123456789", verify=ep.verify, allow_http=ep.kind == "frr") as client:
        with pytest.raises(PermanentError, match="401"):
            await client.state()
    bad = Intent(ep.local_asn, ((ep.neighbors[0][0], 0),), ("0.0.0.0/0",), ep.firewall_ip)
    async with ep.client() as client:
        with pytest.raises(PermanentError, match="422"):
            await client.apply_intent(bad)


# ------------------------------------------------------------------------------- local policy (#13)
@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"prefixes": ["0.0.0.0/0", "192.0.2.0/24"]}, "prefixes"),
        ({"next_hop": "10.9.9.9"}, "next_hops"),
        ({"extra_neighbor": {"ip": "10.0.2.9", "asn": 65515}}, "neighbors"),
        ({"extra_neighbor": {"ip": "10.0.2.9", "asn": "LOCAL"}}, "no-local-asn-neighbor"),
    ],
    ids=["prefix", "next-hop", "neighbor", "local-asn-neighbor"],
)
def test_an_intent_outside_the_nvas_policy_is_403_naming_the_rule(
    agent_endpoint: AgentEndpoint, change: dict[str, Any], rule: str
) -> None:
    ep = agent_endpoint
    body = ep.intent(**{k: v for k, v in change.items() if k != "extra_neighbor"})
    if "extra_neighbor" in change:
        extra = dict(change["extra_neighbor"])
        extra["asn"] = ep.local_asn if extra["asn"] == "LOCAL" else extra["asn"]
        body["neighbors"] = [*body["neighbors"], extra]
    with ep.http() as http:
        before = http.get("/v1/state", headers=ep.auth()).json()
        resp = http.put("/v1/bgp/intent", json=body, headers=ep.auth())
        after = http.get("/v1/state", headers=ep.auth()).json()
    assert resp.status_code == 403, resp.text
    assert resp.json()["rule"] == rule and resp.json()["detail"]
    assert after["config_hash"] == before["config_hash"]


async def test_the_client_reports_a_policy_refusal_as_permanent(agent_endpoint: AgentEndpoint) -> None:
    ep = agent_endpoint
    outside = Intent(ep.local_asn, ep.neighbors, ("0.0.0.0/0", "192.0.2.0/24"), ep.firewall_ip)
    async with ep.client() as client:
        with pytest.raises(PermanentError, match=r"403.*192\.0\.2\.0/24"):
            await client.apply_intent(outside)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_api_documents_are_not_served(agent_endpoint: AgentEndpoint, path: str) -> None:
    with agent_endpoint.http() as http:
        assert http.get(path).status_code == 404
