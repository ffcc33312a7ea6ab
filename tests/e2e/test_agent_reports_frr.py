"""The real agent on real FRR reports changes made around it, signed, to the reconciler's endpoint.

The agent runs in the NVA namespace and reaches the Functions app (served on the host's loopback by
the local host) through the lab's HostRelay. A vtysh edit in the namespace is reported within about
a second, accepted by `POST /api/agent/changes`, and the targeted pass it queues finds the drift,
fixes it through the same agent and records who changed it; the agent's own fix is reported as its
own and starts nothing; an edit within a second of the agent's apply is still "outside"; what FRR
advertises (a withdrawal with no config change) and its BGP sessions (a route server's link down)
are reported too.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import ArmEmulator, World
from localenv import scenarios
from localenv.azurite import Azurite
from localenv.demo_events import app_host
from localenv.demo_world import EXAMPLE, TOKEN_SETTING, demo_env
from reconciler.events import Verdict
from tests.fixtures.emulator import REFERENCE_LAB
from tests.fixtures.frr import AgentProcess, FrrLabHandle, nva_config, wait_until

pytestmark = [pytest.mark.frr, pytest.mark.azurite]

KEY = "k1"


@pytest.fixture
def lab_emulator(frr_lab: FrrLabHandle) -> Iterator[ArmEmulator]:
    world = World.load(REFERENCE_LAB)
    scenarios.nva_at(world, frr_lab.addr.nva_ip)
    with ArmEmulator(world) as emu:
        emu.set_learned_source(frr_lab.addr.nva_ip, frr_lab.learned_routes)
        yield emu


@pytest.fixture
def app(
    frr_lab: FrrLabHandle, lab_emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, Any, AgentProcess, Path]]:
    """(host, function_app, reporting agent, desired-state file): the agent reports to the app."""
    doc_path = tmp_path / "desired.json"
    env = {
        **demo_env(lab_emulator, azurite.connection_string),
        "ARS_DESIRED_STATE": str(doc_path),
        "ARS_TABLE_PREFIX": storage_prefix,
        "ARS_FANOUT_QUEUE": storage_prefix,
        "ARS_VERIFY_TIMEOUT": "15",
        "ARS_AGENT_TIMEOUT": "30",
        TOKEN_SETTING: frr_lab.agent_token,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    frr_lab.lab.load_nva_config(nva_config(frr_lab.addr))  # the design, as the agent left it
    frr_lab.lab.wait_converged()
    doc_path.write_text(json.dumps(_desired(frr_lab.addr.nva_ip, "http://127.0.0.1:1")))
    with app_host(azurite.connection_string, key=KEY) as (host, fa):
        agent = frr_lab.lab.start_agent(token=frr_lab.agent_token, report_to=f"{host.url}/api/agent/changes?code={KEY}")
        try:
            doc_path.write_text(json.dumps(_desired(frr_lab.addr.nva_ip, agent.url)))  # re-read by mtime
            yield host, fa, agent, doc_path
        finally:
            agent.stop()


def _desired(nva_ip: str, agent_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["targets"][0]["peers"][0].update(ip=nva_ip, agent_url=agent_url, token_setting=TOKEN_SETTING, agent_lab=True)
    return doc


def _count(fa: Any, verdict: Verdict) -> int:
    return int(fa.EVENTS.counts[verdict])


def test_a_vtysh_edit_is_reported_within_a_second_and_its_targeted_pass_fixes_it(
    frr_lab: FrrLabHandle, app: tuple[Any, Any, AgentProcess, Path]
) -> None:
    host, fa, agent, _ = app
    lab = frr_lab.lab
    t0 = time.monotonic()
    lab.vtysh("nva", "configure terminal", "route-map nva-agent-ars-out permit 10",
              f"no set ip next-hop {frr_lab.addr.firewall_ip}", "end", "clear bgp ipv4 unicast * soft out")  # fmt: skip
    wait_until(lambda: _count(fa, Verdict.ACCEPTED) >= 1, 10, "the reconciler to accept the agent's report")
    reported = time.monotonic() - t0
    # 1 s polling plus one signed POST through the relay; slack for two shared cores.
    assert reported < 3.0, f"reported after {reported:.2f} s"
    assert _count(fa, Verdict.FORGED) == 0 and _count(fa, Verdict.STALE) == 0

    rt = host.run(fa.WORKER.runtime())
    host.drain(deadline_s=60)  # the targeted pass (its message waits out the settle delay)
    history = host.run(rt.ledger.history(target="hub-weu", limit=50))
    opened = [h for h in history if h["kind"] == "opened" and h["code"] == "ROUTE_NEXT_HOP_WRONG"]
    assert opened, [(h["kind"], h.get("code")) for h in history]
    assert "outside the agent" in str(opened[0].get("changed_by")), opened[0]
    assert any(h["kind"] == "resolved" and h["code"] == "ROUTE_NEXT_HOP_WRONG" for h in history), history
    assert [p.trigger for p in host.run(rt.ledger.passes(limit=10))] == ["event"]
    wait_until(lambda: all(lab.holds_default(rs) for rs in (0, 1)), 10, "both route servers to hold the route again")
    # The agent's own fix is reported as its own: it is counted and starts no pass.
    wait_until(lambda: _count(fa, Verdict.SELF) >= 1, 10, "the agent to report its own fix")
    host.drain(deadline_s=30)
    assert [p.trigger for p in host.run(rt.ledger.passes(limit=10))] == ["event"]
    assert "code=" not in agent.log(), "the report URL's function key must never be logged"


def test_an_edit_right_after_the_agents_own_apply_is_reported_as_outside(
    frr_lab: FrrLabHandle, app: tuple[Any, Any, AgentProcess, Path]
) -> None:
    import httpx

    _host, fa, agent, _ = app
    lab = frr_lab.lab
    # The agent applies an intent (here: the next hop of a moved firewall), then within the
    # watcher's next second an operator removes the network statement by hand.
    body = frr_lab.intent_body(next_hop="10.0.3.5")
    resp = httpx.put(f"{agent.url}/v1/bgp/intent", json=body, headers={"Authorization": f"Bearer {agent.token}"},
                     timeout=60)  # fmt: skip
    assert resp.status_code == 200 and resp.json()["applied"], resp.text
    lab.vtysh("nva", "configure terminal", f"router bgp {frr_lab.addr.nva_asn}", "address-family ipv4 unicast",
              "no network 0.0.0.0/0 route-map nva-agent-originate", "end")  # fmt: skip
    # Before the agent hashed its config right after applying, the watcher's next read took both
    # changes for the agent's own: the edit was never reported.
    wait_until(lambda: _count(fa, Verdict.ACCEPTED) >= 1, 10, "the outside edit to be reported and accepted")


def test_a_withdrawn_advertisement_with_no_config_change_is_reported(
    frr_lab: FrrLabHandle, app: tuple[Any, Any, AgentProcess, Path]
) -> None:
    host, fa, _agent, _ = app
    lab = frr_lab.lab
    ns = lab.ns("nva")
    # The kernel loses the route behind `network 0.0.0.0/0` (import-check): bgpd withdraws it from
    # both route servers while the running config stays exactly as the agent left it.
    subprocess.run(["ip", "-n", ns, "route", "del", "blackhole", "0.0.0.0/0"], check=True, timeout=10)
    try:
        wait_until(lambda: all(lab.best(rs).get("0.0.0.0/0") is None for rs in (0, 1)), 10, "the withdrawal")
        wait_until(lambda: _count(fa, Verdict.ACCEPTED) >= 1, 10, "the advertisement change to be reported")
        rt = host.run(fa.WORKER.runtime())
        host.drain(deadline_s=60)
        history = host.run(rt.ledger.history(target="hub-weu", limit=50))
        opened = [h for h in history if h["kind"] == "opened" and h["code"] == "ROUTE_MISSING"]
        assert opened and "frr advertised changed" in str(opened[0].get("changed_by")), history
    finally:
        subprocess.run(["ip", "-n", ns, "route", "replace", "blackhole", "0.0.0.0/0"], check=True, timeout=10)
    wait_until(lambda: all(lab.holds_default(rs) for rs in (0, 1)), 15, "the route to come back")


def test_a_lost_bgp_session_is_reported(
    frr_lab: FrrLabHandle, app: tuple[Any, Any, AgentProcess, Path], azurite: Azurite, storage_prefix: str
) -> None:
    from azure.data.tables import TableClient

    _host, fa, _agent, _ = app
    lab = frr_lab.lab
    rs2 = lab.ns("rs2")
    # Route server 2's link goes down: nothing changes in the NVA's config, its session to
    # 10.0.2.5 ends when the hold timer (3 s in the lab) runs out.
    subprocess.run(["ip", "-n", rs2, "link", "set", "eth0", "down"], check=True, timeout=10)
    try:
        wait_until(lambda: _count(fa, Verdict.ACCEPTED) >= 1, 15, "the lost session to be reported")
        with TableClient.from_connection_string(azurite.connection_string, f"{storage_prefix}events") as table:
            changes = json.loads(table.get_entity("pending", "hub-weu")["changes"])
        assert any("frr sessions changed" in c["operation"] and "10.0.2.5=" in c["operation"] for c in changes), changes
    finally:
        subprocess.run(["ip", "-n", rs2, "link", "set", "eth0", "up"], check=True, timeout=10)
    lab.wait_converged(20)
