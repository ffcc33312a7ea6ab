"""The two-target example (ExpressRoute hub + VPN hub with the /1 halves) against its emulator world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from emulator import ArmEmulator, World
from localenv.demo import demo_env
from reconciler import desired
from reconciler.composition import Runtime
from reconciler.drift import DriftCode
from reconciler.service import reconcile
from reconciler.settings import load_settings
from reconciler.trigger import Trigger
from tests.fixtures.emulator import TWO_TARGETS

EXAMPLE = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "two-targets.yaml"


@pytest.fixture
def emulator_world_path() -> Path:
    return TWO_TARGETS


@pytest.fixture
def state(emulator: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> desired.DesiredState:
    doc = yaml.safe_load(EXAMPLE.read_text())
    for target in doc["targets"]:
        for peer in target["peers"]:
            peer["agent_url"] = emulator.agent_url(peer["ip"])
            monkeypatch.setenv(peer["token_setting"], emulator.world.nva(peer["ip"]).agent_token)
    return desired.parse(doc, str(EXAMPLE))


@pytest.fixture
async def runtime(emulator: ArmEmulator, state: desired.DesiredState) -> AsyncIterator[Runtime]:
    # After `state`: that fixture puts the agent tokens in the environment the settings read.
    env = {**demo_env(emulator), "ARS_VERIFY_INTERVAL": "0.05", "ARS_VERIFY_TIMEOUT": "15"}
    async with Runtime(load_settings(env), storage=False) as rt:
        yield rt


async def test_both_hubs_are_healthy_including_the_vpn_hub_without_a_default_route(
    runtime: Runtime, state: desired.DesiredState
) -> None:
    assert runtime.services is not None
    report = await reconcile(runtime.services, state, trigger=Trigger.CLI, dry_run=True)
    assert [(t.target, t.drifts) for t in report.targets] == [("hub-weu", []), ("hub2-vpn", [])]


async def test_vpn_hub_losing_a_half_is_fixed_back_to_both_halves(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator
) -> None:
    nva = emulator.world.nva("10.1.1.6")
    with emulator.world.lock:
        nva.announcements = nva.announcements[:1]  # only 0.0.0.0/1 left
    assert runtime.services is not None
    report = await reconcile(runtime.services, state, trigger=Trigger.CLI)
    vpn = report.targets[1]
    assert {(d.code, d.part("prefix")) for d in vpn.drifts} >= {(DriftCode.ROUTE_MISSING, "128.0.0.0/1")}
    assert [o.outcome for o in vpn.outcomes] == ["fixed"]
    assert report.targets[0].outcomes == []  # the healthy hub is left alone
    assert sorted(a.prefix for a in nva.announcements) == ["0.0.0.0/1", "128.0.0.0/1"]


def test_example_and_world_name_the_same_resources() -> None:
    world = World.load(TWO_TARGETS)
    for t in desired.load(EXAMPLE).targets:
        rs = world.route_server(t.subscription_id, t.resource_group, t.route_server)
        assert {p.name for p in t.peers} == {c.name for c in rs.connections}


async def test_vpn_hub_firewall_subnet_with_only_a_default_udr_loops_through_the_halves(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator
) -> None:
    # Issue #11 item 7: Route Server pushes 0.0.0.0/1 + 128.0.0.0/1 into AzureFirewallSubnet; longer
    # prefixes win before UDR preference, so a 0/0 -> Internet UDR alone sends the firewall's internet
    # traffic back to the firewall.
    rt = emulator.world.route_table("sub-2", "rg-hub2", "fw-rt2")
    with emulator.world.lock:
        rt.routes = [r for r in rt.routes if r.prefix == "0.0.0.0/0"]
    assert runtime.services is not None
    report = await reconcile(runtime.services, state, trigger=Trigger.CLI, dry_run=True)
    vpn = report.targets[1]
    broken = [d for d in vpn.drifts if d.code is DriftCode.UDR_INVARIANT_BROKEN]
    assert {d.subject for d in broken} == {
        f"subnet=hub2-vnet:AzureFirewallSubnet/prefix={p}" for p in ("0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1")
    }
    assert "0.0.0.0/1 -> VirtualNetworkGateway 10.1.3.4" in broken[0].observed
    assert report.targets[0].drifts == []


def test_trace_of_the_two_target_example_is_whole_then_names_the_firewall_subnet(
    emulator: ArmEmulator, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    doc = yaml.safe_load(EXAMPLE.read_text())
    env = {**os.environ, **demo_env(emulator)}
    for target in doc["targets"]:
        for peer in target["peers"]:
            peer["agent_url"] = emulator.agent_url(peer["ip"])
            env[peer["token_setting"]] = emulator.world.nva(peer["ip"]).agent_token
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(doc))

    def run() -> tuple[int, dict[str, object]]:
        cmd = [sys.executable, "-m", "reconciler", "trace", str(path), "--json"]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=EXAMPLE.parents[2])
        assert res.returncode in (0, 2), res.stderr
        return res.returncode, json.loads(res.stdout)

    code, out = run()
    traces = out["traces"]
    assert isinstance(traces, list)
    assert [(t["target"], t["prefix"], t["verdict"]) for t in traces] == [
        ("hub-weu", "0.0.0.0/0", "ok"),
        ("hub2-vpn", "0.0.0.0/1", "ok"),
        ("hub2-vpn", "128.0.0.0/1", "ok"),
    ]
    assert code == 0
    vpn_sources = [p["source"] for p in traces[1]["paths"]]
    assert vpn_sources == ["vpngw:10.50.0.1", "hub2-vnet:AzureFirewallSubnet", "hub2-vnet:NvaSubnet"]

    rt = emulator.world.route_table("sub-2", "rg-hub2", "fw-rt2")
    with emulator.world.lock:
        rt.routes = [r for r in rt.routes if r.prefix == "0.0.0.0/0"]
    code, out = run()
    traces = out["traces"]
    assert isinstance(traces, list)
    assert code == 2
    assert traces[0]["verdict"] == "ok"
    for t in traces[1:]:
        assert {p["source"]: p["root_cause"] for p in t["paths"]} == {
            "vpngw:10.50.0.1": "subnet:hub2-vnet:AzureFirewallSubnet",
            "hub2-vnet:AzureFirewallSubnet": "subnet:hub2-vnet:AzureFirewallSubnet",
            "hub2-vnet:NvaSubnet": None,
        }
