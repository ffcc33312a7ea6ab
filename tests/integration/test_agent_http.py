"""The real agent's HTTP edge on real FRR: hostile requests change nothing, body cap, TLS,
serialised intents, the token kept out of logs; plus its settings and its OpenAPI document.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nva_agent.app import create_app, openapi_json
from nva_agent.settings import AgentSettings, SettingsError
from reconciler.agent_client import AgentClient
from reconciler.plan import Intent
from tests.fixtures.certs import server_tls
from tests.fixtures.frr import FrrLabHandle, lab_policy, strong_token

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------- no FRR needed
def test_the_committed_openapi_document_is_current() -> None:
    current = openapi_json(create_app(AgentSettings(token="openapi-only-placeholder", lab=True)))
    committed = (REPO / "schemas" / "agent.openapi.json").read_text()
    assert committed == current, "run: python -m nva_agent --write-openapi schemas/agent.openapi.json"


def _policy_file(tmp: Path) -> str:
    f = tmp / "policy.yaml"
    f.write_text(lab_policy())
    f.chmod(0o644)
    return str(f)


def test_settings_read_the_token_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    token = strong_token()
    f.write_text(f"{token}\n")
    f.chmod(0o600)
    s = AgentSettings.from_env(
        {"NVA_AGENT_TOKEN_FILE": str(f), "NVA_AGENT_FRR_CONFIG_DIR": "/tmp/x", "NVA_AGENT_POLICY_FILE": _policy_file(tmp_path)}
    )
    assert s.token_file == f
    assert str(s.frr.config_dir) == "/tmp/x"
    assert token not in repr(s)


def test_change_reports_may_go_over_plain_http_only_to_a_loopback_relay(tmp_path: Path) -> None:
    s = AgentSettings.from_env({"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_POLICY_FILE": _policy_file(tmp_path),
                                "NVA_AGENT_REPORT_URL": "http://127.0.0.1:8080/api/agent/changes?code=k",
                                "NVA_AGENT_REPORT_IP": "10.0.1.6"})  # fmt: skip
    assert s.report_url == "http://127.0.0.1:8080/api/agent/changes?code=k"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"NVA_AGENT_TOKEN": "short"},
        {"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_TLS_CERT": "/c.pem"},
        {"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_TLS_CLIENT_CA": "/ca.pem"},
        {"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_REPORT_URL": "http://reconciler.example/api/agent/changes",
         "NVA_AGENT_REPORT_IP": "10.0.1.6"},
        {"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_REPORT_URL": "http://10.0.0.9/api/agent/changes",
         "NVA_AGENT_REPORT_IP": "10.0.1.6"},
    ],
    ids=["no-token", "short-token", "cert-without-key", "client-ca-without-tls", "report-http-by-name",
         "report-http-off-loopback"],
)
def test_settings_refuse_to_start_without_a_usable_token_or_tls_pair(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(SettingsError):
        AgentSettings.from_env({**env, "NVA_AGENT_POLICY_FILE": _policy_file(tmp_path)})


# ------------------------------------------------------------------------------- on FRR
def _auth(lab: FrrLabHandle) -> dict[str, str]:
    return {"Authorization": f"Bearer {lab.agent_token}"}


@pytest.fixture
def settled(frr_lab: FrrLabHandle) -> str:
    """The lab on the design intent; returns FRR's running config to compare against."""
    resp = httpx.put(f"{frr_lab.agent_url}/v1/bgp/intent", json=frr_lab.intent_body(), headers=_auth(frr_lab))
    assert resp.status_code == 200
    return frr_lab.running_config()


@pytest.mark.frr
def test_a_body_over_16_kib_is_413_whether_declared_or_streamed(frr_lab: FrrLabHandle, settled: str) -> None:
    big = json.dumps(frr_lab.intent_body(prefixes=[f"10.{i // 256}.{i % 256}.0/24" for i in range(1500)])).encode()
    assert len(big) > 16 * 1024
    headers = {**_auth(frr_lab), "Content-Type": "application/json"}
    declared = httpx.put(f"{frr_lab.agent_url}/v1/bgp/intent", content=big, headers=headers)

    def chunks() -> Any:
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    streamed = httpx.put(f"{frr_lab.agent_url}/v1/bgp/intent", content=chunks(), headers=headers)
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert frr_lab.running_config() == settled


def _not_ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return True
    return False


def _not_prefix(s: str) -> bool:
    try:
        ipaddress.IPv4Network(s, strict=True)
    except ValueError:
        return True
    return "/" not in s


METACHARS = [";", "\n", "!", " ", "\t", "\r\n", "|", "&", "$(", "`", "#", "\x00", "'", '"', "\\"]
hostile = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, m, b: a + m + b, st.sampled_from(["10.0.2.4", "0.0.0.0/0", "10.0.3.4", ""]),
              st.sampled_from(METACHARS), st.sampled_from(["", "end", "no router bgp 65001", "reboot", "write"])),
)  # fmt: skip
bad_ip = hostile.filter(_not_ipv4)
bad_prefix = hostile.filter(_not_prefix)
bad_asn = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**32),
    st.sampled_from([23456, 65515, 64496, 65535, 4294967295]),  # reserved (as local_asn)
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
bad_neighbor_asn = st.one_of(st.integers(max_value=0), st.integers(min_value=2**32), st.text(max_size=8), st.none())


@st.composite
def bad_bodies(draw: st.DrawFn) -> Any:
    """A design intent with exactly one thing wrong (so a 4xx can only be for that)."""
    body: dict[str, Any] = {
        "local_asn": 65001,
        "neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.2.5", "asn": 65515}],
        "prefixes": ["0.0.0.0/0"],
        "next_hop": "10.0.3.4",
        "dry_run": False,
    }
    what = draw(st.sampled_from(["local_asn", "neighbor_ip", "neighbor_asn", "prefix", "next_hop", "extra", "neighbor_extra", "dry_run", "shape"]))  # fmt: skip
    if what == "local_asn":
        body["local_asn"] = draw(bad_asn)
    elif what == "neighbor_ip":
        body["neighbors"][draw(st.integers(0, 1))]["ip"] = draw(bad_ip)
    elif what == "neighbor_asn":
        body["neighbors"][draw(st.integers(0, 1))]["asn"] = draw(bad_neighbor_asn)
    elif what == "prefix":
        body["prefixes"] = [*body["prefixes"], draw(bad_prefix)]
    elif what == "next_hop":
        body["next_hop"] = draw(bad_ip.filter(lambda s: s is not None))
    elif what == "extra":
        body[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in body))] = draw(st.text(max_size=12))
    elif what == "neighbor_extra":
        body["neighbors"][0][draw(st.sampled_from(["password", "port", "IP", "Asn"]))] = draw(st.text(max_size=12))
    elif what == "dry_run":
        body["dry_run"] = draw(st.one_of(st.text(max_size=5), st.integers(), st.none()))
    else:
        return draw(st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=20), st.none(), st.just({})))
    return body


@pytest.mark.frr
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bad_bodies(), token=st.one_of(st.none(), st.just("good")))
def test_hostile_intents_get_4xx_and_leave_frr_byte_for_byte_unchanged(
    frr_lab: FrrLabHandle, settled: str, body: Any, token: str | None
) -> None:
    headers = _auth(frr_lab) if token == "good" else {}
    # allow_nan: hypothesis draws inf/nan floats; sent as-is they are invalid JSON, which must be a 4xx too.
    raw = json.dumps(body, allow_nan=True).encode()
    headers = {**headers, "Content-Type": "application/json"}
    resp = httpx.put(f"{frr_lab.agent_url}/v1/bgp/intent", content=raw, headers=headers, timeout=30)
    assert resp.status_code == (422 if token == "good" else 401), (body, resp.text)
    assert frr_lab.running_config() == settled


@pytest.mark.frr
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), token=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40))
def test_garbage_bodies_and_tokens_get_4xx_and_change_nothing(
    frr_lab: FrrLabHandle, settled: str, raw: bytes, token: str
) -> None:
    # an empty drawn token means: send the right one, so garbage also reaches the parser
    headers = _auth(frr_lab) if token == "" else {"Authorization": f"Bearer {token}"}
    headers["Content-Type"] = "application/json"
    resp = httpx.put(f"{frr_lab.agent_url}/v1/bgp/intent", content=raw, headers=headers, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert frr_lab.running_config() == settled


@pytest.mark.frr
async def test_concurrent_intents_are_applied_one_after_the_other(frr_lab: FrrLabHandle, settled: str) -> None:
    addr = frr_lab.addr
    neighbors = tuple((ip, addr.rs_asn) for ip in addr.rs_ips)
    other = Intent(addr.nva_asn, neighbors, ("0.0.0.0/0",), "10.0.3.5")
    async with AgentClient(frr_lab.agent_url, frr_lab.agent_token, verify=False, allow_http=True) as client:
        results = await asyncio.gather(*(client.apply_intent(other) for _ in range(3)))
        await client.apply_intent(Intent(addr.nva_asn, neighbors, ("0.0.0.0/0",), addr.firewall_ip))
    assert sorted((r.changed, r.applied) for r in results) == [(False, False), (False, False), (True, True)]


@pytest.mark.frr
def test_the_token_never_reaches_the_agent_log(frr_lab: FrrLabHandle, settled: str) -> None:
    httpx.get(f"{frr_lab.agent_url}/v1/state", headers=_auth(frr_lab))
    httpx.get(f"{frr_lab.agent_url}/v1/state", headers={"Authorization": "Bearer guessed-wrong-123456"})
    log = frr_lab.agent.log()
    assert "GET /v1/state" in log
    assert frr_lab.agent_token not in log and "guessed-wrong" not in log


@pytest.mark.frr
async def test_the_agent_serves_tls_that_the_client_verifies_with_a_ca_file(
    frr_lab: FrrLabHandle, tmp_path: Path
) -> None:
    ca, cert, key = server_tls(tmp_path)
    agent = frr_lab.lab.start_agent(
        frr_lab.agent_token,
        {"NVA_AGENT_TLS_CERT": str(cert), "NVA_AGENT_TLS_KEY": str(key)},
        scheme="https",
        ca=str(ca),
    )
    try:
        async with AgentClient(agent.url, agent.token, verify=str(ca)) as client:
            state = await client.state()
        assert state.local_asn == 65001
    finally:
        agent.stop()
