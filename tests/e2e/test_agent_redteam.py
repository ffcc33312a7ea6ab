"""Red team on real FRR (issue #13): each attack on the NVA agent, with a valid token where it
needs one, is refused with the right status and leaves FRR's running config byte for byte as it
was; the connection-level attacks are bounded to a few seconds; legitimate intents still apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.agent_client import AgentClient
from reconciler.plan import Intent
from tests.fixtures.certs import self_signed_client, server_tls
from tests.fixtures.frr import AgentProcess, FrrLabHandle, lab_policy, nva_config, strong_token, wait_until

pytestmark = pytest.mark.frr

REPO = Path(__file__).resolve().parents[2]
ATTACKER = "127.0.0.2"  # loopback, another source address: the per-client limit tells it apart


def _put(url: str, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{url}/v1/bgp/intent", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _only_the_default_via_the_firewall(lab: FrrLabHandle) -> bool:
    want = {"0.0.0.0/0": {"next_hop": lab.addr.firewall_ip, "as_path": str(lab.addr.nva_asn)}}
    return all(lab.received(rs) == want for rs in (0, 1))


@pytest.fixture
def settled(frr_lab: FrrLabHandle) -> str:
    """The NVA healthy and on the design intent; FRR's running config, to compare byte for byte."""
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr))
    resp = _put(frr_lab.agent_url, frr_lab.agent_token, frr_lab.intent_body())
    assert resp.status_code == 200, resp.text
    wait_until(lambda: _only_the_default_via_the_firewall(frr_lab), 10, "both route servers to hold the route")
    return frr_lab.running_config()


# ------------------------------------------------------------------------------- finding 1: local limits
ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "prefix_outside_policy": ({"prefixes": ["0.0.0.0/0", "192.0.2.0/24"]}, "prefixes"),
    "more_specific_of_on_premises": ({"prefixes": ["10.20.10.0/25"]}, "prefixes"),
    "next_hop_outside_policy": ({"next_hop": "10.0.1.99"}, "next_hops"),
    "neighbor_outside_policy": (
        {"neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.9.9", "asn": 65515}]},
        "neighbors",
    ),
    "route_server_ip_with_another_asn": ({"neighbors": [{"ip": "10.0.2.4", "asn": 65010}]}, "neighbors"),
    "ibgp_neighbor_with_the_local_asn": (
        {"neighbors": [{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.1.99", "asn": 65001}]},
        "no-local-asn-neighbor",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_intent_outside_the_local_policy_is_403_naming_the_rule_and_frr_is_untouched(
    frr_lab: FrrLabHandle, settled: str, attack: str
) -> None:
    change, rule = ATTACKS[attack]
    resp = _put(frr_lab.agent_url, frr_lab.agent_token, frr_lab.intent_body(**change))
    assert resp.status_code == 403, resp.text
    assert resp.json()["rule"] == rule
    assert frr_lab.running_config() == settled
    assert _only_the_default_via_the_firewall(frr_lab)


def test_a_local_asn_neighbor_is_refused_even_by_a_lab_agent_without_policy(
    frr_lab: FrrLabHandle, settled: str
) -> None:
    agent = frr_lab.lab.start_agent(frr_lab.agent_token, lab_mode=True)
    try:
        body = frr_lab.intent_body(neighbors=[{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.1.99", "asn": 65001}])
        resp = _put(agent.url, agent.token, body)
    finally:
        agent.stop()
    assert (resp.status_code, resp.json()["rule"]) == (403, "no-local-asn-neighbor")
    assert frr_lab.running_config() == settled


def test_the_policy_file_is_reread_when_it_changes_and_an_unusable_one_refuses_everything(
    frr_lab: FrrLabHandle, settled: str
) -> None:
    agent = frr_lab.lab.start_agent(frr_lab.agent_token)
    policy = Path(_env_of(agent)["NVA_AGENT_POLICY_FILE"])
    try:
        assert _put(agent.url, agent.token, frr_lab.intent_body()).status_code == 200
        policy.write_text(lab_policy(frr_lab.addr).replace("prefixes: [0.0.0.0/0, ", "prefixes: ["))
        tightened = _put(agent.url, agent.token, frr_lab.intent_body())
        policy.write_text("neighbors: [\n")  # an editor's half-written file
        broken = _put(agent.url, agent.token, frr_lab.intent_body())
        policy.write_text(lab_policy(frr_lab.addr))
        policy.chmod(0o666)  # any local user could widen it
        unsafe = _put(agent.url, agent.token, frr_lab.intent_body())
    finally:
        agent.stop()
    assert (tightened.status_code, tightened.json()["rule"]) == (403, "prefixes")
    assert (broken.status_code, broken.json()["rule"]) == (403, "policy-file")
    assert (unsafe.status_code, unsafe.json()["rule"]) == (403, "policy-file")
    assert "writable by group or others" in unsafe.json()["detail"]
    assert frr_lab.running_config() == settled


# ------------------------------------------------------------------------------- finding 2: route leaks
def test_an_operator_outbound_route_map_on_a_route_server_is_409_and_frr_is_untouched(frr_lab: FrrLabHandle) -> None:
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr, operator_out_map=True))
    before = frr_lab.running_config()
    resp = _put(frr_lab.agent_url, frr_lab.agent_token, frr_lab.intent_body())
    assert resp.status_code == 409, resp.text
    assert resp.json()["conflicts"] == [f"neighbor {ip} route-map rmap-sdwan-out out" for ip in frr_lab.addr.rs_ips]
    assert frr_lab.running_config() == before


def test_routes_the_nva_holds_besides_the_intent_never_reach_the_route_servers(frr_lab: FrrLabHandle) -> None:
    # the operator redistributes a static route (as an SD-WAN or iBGP route would arrive): the
    # agent's outbound route-map ends in a deny, so only the intent's prefix is sent
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr, redistribute=True, next_hop="10.0.3.5"))
    resp = _put(frr_lab.agent_url, frr_lab.agent_token, frr_lab.intent_body())
    assert resp.status_code == 200 and resp.json()["applied"], resp.text
    assert "  redistribute static" in frr_lab.running_config().splitlines()  # the operator's line stays
    wait_until(lambda: _only_the_default_via_the_firewall(frr_lab), 5, "the route servers to hold only 0.0.0.0/0")
    time.sleep(0.5)  # a leak would come with the same UPDATE burst; give it one more chance to show
    assert _only_the_default_via_the_firewall(frr_lab)


# ------------------------------------------------------------------------------- finding 3: plain HTTP
def _start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    cmd = [sys.executable, "-m", "nva_agent", *args]
    return subprocess.run(cmd, env=full, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)


def _policy_file(tmp: Path) -> str:
    p = tmp / "policy.yaml"
    p.write_text(lab_policy())
    p.chmod(0o644)
    return str(p)


def test_plain_http_on_a_non_loopback_address_is_refused_at_start(tmp_path: Path) -> None:
    res = _start(
        ["--host", "0.0.0.0"], {"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_POLICY_FILE": _policy_file(tmp_path)}
    )
    assert res.returncode == 2
    assert "refusing to serve plain HTTP on 0.0.0.0" in res.stderr and "NVA_AGENT_TLS_CERT" in res.stderr


def test_without_a_policy_file_the_agent_does_not_start(tmp_path: Path) -> None:
    res = _start([], {"NVA_AGENT_TOKEN": strong_token(), "NVA_AGENT_POLICY_FILE": str(tmp_path / "absent.yaml")})
    assert res.returncode == 2
    assert "does not start without a local policy" in res.stderr and "absent.yaml" in res.stderr


async def test_mutual_tls_admits_only_the_pinned_client_certificate(frr_lab: FrrLabHandle, tmp_path: Path) -> None:
    ca, cert, key = server_tls(tmp_path)
    pinned = self_signed_client(tmp_path, "reconciler")
    stranger = self_signed_client(tmp_path, "stranger")
    agent = frr_lab.lab.start_agent(
        frr_lab.agent_token,
        {"NVA_AGENT_TLS_CERT": str(cert), "NVA_AGENT_TLS_KEY": str(key), "NVA_AGENT_TLS_CLIENT_CA": str(pinned[0])},
        scheme="https",
        ca=str(ca),
        client_cert=(str(pinned[0]), str(pinned[1])),
    )
    try:
        pair = (str(pinned[0]), str(pinned[1]))
        async with AgentClient(agent.url, agent.token, verify=str(ca), client_cert=pair) as client:
            assert (await client.state()).local_asn == frr_lab.addr.nva_asn
        for cert_pair in (None, (str(stranger[0]), str(stranger[1]))):
            ctx = ssl.create_default_context(cafile=str(ca))
            if cert_pair:
                ctx.load_cert_chain(*cert_pair)
            with pytest.raises(httpx.TransportError):  # the handshake fails: no HTTP, no token seen
                httpx.get(f"{agent.url}/v1/health", verify=ctx, timeout=5)
    finally:
        agent.stop()


# ------------------------------------------------------------------------------- finding 4: DoS
def _half_request(source: str, port: int, text: bytes) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(text)
    s.setblocking(False)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: closed too
        return True


async def test_slowloris_connections_are_cut_within_seconds_and_the_reconciler_still_gets_through(
    frr_lab: FrrLabHandle, settled: str
) -> None:
    agent = frr_lab.lab.start_agent(frr_lab.agent_token, {"NVA_AGENT_READ_TIMEOUT": "2"})
    port = int(agent.url.rsplit(":", 1)[1])
    socks: list[socket.socket] = []
    try:
        started = time.monotonic()
        # half-sent headers (far more than the per-client limit), a body that never completes,
        # and a drip that keeps sending a header byte now and then
        socks += [_half_request(ATTACKER, port, b"GET /v1/state HTTP/1.1\r\nHost: nva\r\n") for _ in range(200)]
        body = b"PUT /v1/bgp/intent HTTP/1.1\r\nHost: nva\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        socks += [_half_request("127.0.0.3", port, body) for _ in range(4)]
        drip = [_half_request("127.0.0.4", port, b"GET /v1/state HTTP/1.1\r\n") for _ in range(4)]
        socks += drip
        t0 = time.monotonic()
        async with AgentClient(agent.url, agent.token, verify=False, allow_http=True) as client:
            state = await client.state()  # from 127.0.0.1, while the attack holds its connections
        assert state.local_asn == frr_lab.addr.nva_asn
        assert time.monotonic() - t0 < 2.0

        def all_closed() -> bool:
            for d in drip:
                with contextlib.suppress(OSError):
                    d.send(b"X")
            return all(_closed_by_server(s) for s in socks)

        wait_until(all_closed, 6, "the agent to close every slow connection")
        assert time.monotonic() - started < 2 + 4  # the read deadline plus scheduling slack
    finally:
        for s in socks:
            s.close()
        agent.stop()
    assert frr_lab.running_config() == settled


def test_tls_handshakes_that_never_complete_are_cut_by_the_read_deadline(
    frr_lab: FrrLabHandle, settled: str, tmp_path: Path
) -> None:
    ca, cert, key = server_tls(tmp_path)
    agent = frr_lab.lab.start_agent(
        frr_lab.agent_token,
        {"NVA_AGENT_TLS_CERT": str(cert), "NVA_AGENT_TLS_KEY": str(key), "NVA_AGENT_READ_TIMEOUT": "2"},
        scheme="https",
        ca=str(ca),
    )
    port = int(agent.url.rsplit(":", 1)[1])
    # a TCP connection that never says hello, and one that stops inside its ClientHello
    socks = [_half_request(ATTACKER, port, b"") for _ in range(4)]
    socks += [_half_request("127.0.0.3", port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") for _ in range(4)]
    started = time.monotonic()
    try:
        wait_until(lambda: all(_closed_by_server(s) for s in socks), 8, "the agent to drop the stalled handshakes")
        assert time.monotonic() - started < 2 + 4
    finally:
        for s in socks:
            s.close()
        agent.stop()
    assert frr_lab.running_config() == settled


def _env_of(agent: AgentProcess) -> dict[str, str]:
    raw = Path(f"/proc/{agent.proc.pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_a_health_storm_runs_vtysh_at_most_once_a_second(frr_lab: FrrLabHandle, settled: str) -> None:
    calls = frr_lab.lab.work / f"vtysh-calls-{os.getpid()}.log"
    wrapper = frr_lab.lab.work / "vtysh-counting"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec vtysh "$@"\n')
    wrapper.chmod(0o755)
    # Count from before the agent starts: its start-up health check fills the 1 s cache, and a
    # storm answered within that second runs no vtysh of its own (seen in CI), so the window
    # the bound covers includes the start-up.
    calls.write_text("")
    started = time.monotonic()
    agent = frr_lab.lab.start_agent(
        frr_lab.agent_token,
        {
            "NVA_AGENT_FRR_VTYSH": str(wrapper),
            "NVA_AGENT_MAX_CONNECTIONS": "400",
            "NVA_AGENT_MAX_CONNECTIONS_PER_CLIENT": "400",
        },
    )
    try:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=agent.url, limits=limits, timeout=30) as http:
            answers = await asyncio.gather(*(http.get("/v1/health") for _ in range(300)))
            elapsed = time.monotonic() - started
    finally:
        agent.stop()
    assert [r.status_code for r in answers] == [200] * 300
    runs = calls.read_text().count("show bgp summary json")
    assert 1 <= runs <= int(elapsed) + 2, (runs, elapsed)
    assert frr_lab.running_config() == settled


# ------------------------------------------------------------------------------- finding 6: tokens
@pytest.mark.parametrize(
    "token",
    ["x" * 64, "0123456789abcdef", "lab-" + "ab" * 16, "correct horse battery staple correct horse battery"],
    ids=["repeated", "16-chars", "36-chars", "words"],
)
def test_a_weak_token_is_refused_at_start_with_a_clear_message(token: str, tmp_path: Path) -> None:
    res = _start([], {"NVA_AGENT_TOKEN": token, "NVA_AGENT_POLICY_FILE": _policy_file(tmp_path)})
    assert res.returncode == 2
    assert "weak token refused" in res.stderr and "secrets.token_urlsafe(32)" in res.stderr
    assert token not in res.stderr + res.stdout


def test_tokens_rotate_without_a_restart_current_and_next_then_next_only(frr_lab: FrrLabHandle, settled: str) -> None:
    t1, t2, t3 = strong_token(), strong_token(), strong_token()
    token_file = frr_lab.lab.work / f"token-{os.getpid()}"
    token_file.write_text(f"{t1}\n")
    token_file.chmod(0o600)
    agent = frr_lab.lab.start_agent("", {"NVA_AGENT_TOKEN_FILE": str(token_file)})

    def status(token: str) -> int:
        return httpx.get(f"{agent.url}/v1/state", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    try:
        first = (status(t1), status(t2))
        token_file.write_text(f"{t1}\n{t2}\n")  # step 1: the agent accepts both
        both = (status(t1), status(t2))
        token_file.write_text(f"{t2}\n")  # step 3: the old one is gone
        after = (status(t1), status(t2))
        # an edit the change check cannot see (same size, same inode, same mtime): SIGHUP reloads
        st = token_file.stat()
        with token_file.open("r+") as f:
            f.write(f"{t3}\n")
        os.utime(token_file, ns=(st.st_atime_ns, st.st_mtime_ns))
        before_hup = status(t3)
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: status(t3) == 200, 5, "SIGHUP to load the new token")
        token_file.write_text("short\n")  # a weak token: fail closed, never fall back to an old one
        weak = (status(t2), status(t3))
    finally:
        agent.stop()
    assert first == (200, 401)
    assert both == (200, 200)
    assert after == (401, 200)
    assert before_hup == 401
    assert weak == (401, 401)
    log = agent.log()
    assert "token file not usable" in log
    assert not any(t in log for t in (t1, t2, t3))
    assert frr_lab.running_config() == settled


# ------------------------------------------------------------------------------- legitimate use
async def test_the_design_intent_still_repairs_a_broken_nva_through_the_reconcilers_client(
    frr_lab: FrrLabHandle, settled: str
) -> None:
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr, next_hop=None, announce=False))
    addr = frr_lab.addr
    intent = Intent(addr.nva_asn, tuple((ip, addr.rs_asn) for ip in addr.rs_ips), ("0.0.0.0/0",), addr.firewall_ip)
    async with AgentClient(frr_lab.agent_url, frr_lab.agent_token, verify=False, allow_http=True) as client:
        result = await client.apply_intent(intent)
    assert (result.changed, result.applied, result.rolled_back) == (True, True, False), result.message
    wait_until(lambda: _only_the_default_via_the_firewall(frr_lab), 5, "both route servers to hold the route")
