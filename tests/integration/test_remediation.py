"""Opt-in Azure-side writes and the firewall-unhealthy policies, through the service on the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from emulator import ArmEmulator, Fault
from localenv import scenarios
from localenv.demo import TOKEN_SETTING, demo_desired, demo_env
from reconciler import desired
from reconciler.composition import Runtime
from reconciler.drift import DriftCode
from reconciler.service import PassReport, reconcile
from reconciler.settings import load_settings
from reconciler.trigger import Trigger


@pytest.fixture(autouse=True)
def agent_token(emulator: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(TOKEN_SETTING, emulator.world.nva(scenarios.NVA_IP).agent_token)
    yield


@pytest.fixture
async def runtime(emulator: ArmEmulator) -> AsyncIterator[Runtime]:
    env = {
        **demo_env(emulator),
        "ARS_VERIFY_INTERVAL": "0.05",
        "ARS_VERIFY_TIMEOUT": "15",
        "ARS_ARM_RETRY_BACKOFF": "0.01",
    }
    async with Runtime(load_settings(env), storage=False) as rt:
        yield rt


def state_with(emu: ArmEmulator, **changes: Any) -> desired.DesiredState:
    doc = demo_desired(emu).model_dump(mode="json")
    for key, value in changes.items():
        doc["targets"][0][key] = value
    return desired.parse(doc)


async def run(rt: Runtime, state: desired.DesiredState) -> PassReport:
    assert rt.services is not None
    return await reconcile(rt.services, state, trigger=Trigger.CLI)


def hub(emu: ArmEmulator) -> Any:
    return emu.world.route_server("sub-1", "rg-hub", "ars-hub")


async def test_branch_to_branch_is_enabled_when_azure_writes_are_allowed(
    runtime: Runtime, emulator: ArmEmulator
) -> None:
    scenarios.branch_to_branch_off(emulator)
    report = await run(runtime, state_with(emulator, policy={"azure_writes": True}))
    assert [o.outcome for o in report.targets[0].outcomes] == ["fixed"]
    assert hub(emulator).branch_to_branch is True
    assert [r.op for r in emulator.requests if r.op == "hub.put"] == ["hub.put"]


async def test_missing_peer_is_written_back_when_allowed(runtime: Runtime, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        hub(emulator).connections.clear()
    report = await run(runtime, state_with(emulator, policy={"azure_writes": True}))
    t = report.targets[0]
    assert DriftCode.PEER_MISSING in {d.code for d in t.drifts}
    assert t.outcomes[0].step.connection == ("nva1", "10.0.1.6", 65001)
    conn = hub(emulator).connection("nva1")
    assert conn is not None and (conn.peer_ip, conn.peer_asn) == ("10.0.1.6", 65001)
    assert t.remaining == [], t.to_dict()


async def test_mismatched_peer_is_left_alone_without_opt_in(runtime: Runtime, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        hub(emulator).connection("nva1").peer_asn = 65002  # type: ignore[union-attr]
    report = await run(runtime, state_with(emulator))
    assert report.targets[0].outcomes == []
    assert not any(r.op == "bgp.put" for r in emulator.requests)
    assert hub(emulator).connection("nva1").peer_asn == 65002  # type: ignore[union-attr]


async def test_another_operation_in_progress_is_deferred_not_failed(runtime: Runtime, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        hub(emulator).connections.clear()
    emulator.inject("bgp.put", Fault.busy(count=None))
    report = await run(runtime, state_with(emulator, policy={"azure_writes": True}))
    outcome = report.targets[0].outcomes[0]
    assert outcome.outcome == "deferred"
    assert "another operation is in progress" in outcome.detail
    emulator.clear_faults()
    later = await run(runtime, state_with(emulator, policy={"azure_writes": True}))
    puts = [o for o in later.targets[0].outcomes if o.step.kind.value == "put_connection"]
    assert [o.outcome for o in puts] == ["fixed"]
    assert later.targets[0].remaining == []


async def test_unexpected_peer_is_never_deleted(runtime: Runtime, emulator: ArmEmulator) -> None:
    from emulator import BgpConnection

    with emulator.world.lock:
        hub(emulator).connections.append(BgpConnection("rogue", "10.0.1.99", 65099))
    report = await run(runtime, state_with(emulator, policy={"azure_writes": True}))
    assert DriftCode.PEER_UNEXPECTED in {d.code for d in report.targets[0].remaining}
    assert not any(r.op == "bgp.delete" for r in emulator.requests)


async def test_withdraw_policy_withdraws_while_the_firewall_is_down_and_restores_after(
    runtime: Runtime, emulator: ArmEmulator
) -> None:
    state = state_with(emulator, firewall={"name": "fw-hub", "unhealthy_policy": "withdraw"})
    scenarios.firewall_deallocated(emulator)
    down = await run(runtime, state)
    assert [o.step.kind.value for o in down.targets[0].outcomes] == ["agent_withdraw"]
    assert emulator.world.nva(scenarios.NVA_IP).announcements == []
    with emulator.world.lock:
        emulator.world.firewall("sub-1", "rg-hub", "fw-hub").private_ip = "10.0.3.4"
    up = await run(runtime, state)
    assert [o.outcome for o in up.targets[0].outcomes] == ["fixed"]
    assert [(a.prefix, a.next_hop) for a in emulator.world.nva(scenarios.NVA_IP).announcements] == [
        ("0.0.0.0/0", "10.0.3.4")
    ]


async def test_alert_policy_keeps_the_route_while_the_firewall_is_down(runtime: Runtime, emulator: ArmEmulator) -> None:
    scenarios.firewall_deallocated(emulator)
    report = await run(runtime, state_with(emulator))
    assert report.targets[0].outcomes == []
    assert emulator.world.nva(scenarios.NVA_IP).announcements != []
    assert DriftCode.FIREWALL_UNHEALTHY in {d.code for d in report.targets[0].remaining}


@pytest.mark.parametrize(("provisioning", "routing"), [("Updating", "Provisioned"), ("Succeeded", "Provisioning")])
async def test_no_azure_write_into_a_hub_that_is_not_ready(
    runtime: Runtime, emulator: ArmEmulator, provisioning: str, routing: str
) -> None:
    with emulator.world.lock:
        h = hub(emulator)
        h.connections.clear()
        h.branch_to_branch = False
        h.provisioning_state, h.routing_state = provisioning, routing
    report = await run(runtime, state_with(emulator, policy={"azure_writes": True}))
    t = report.targets[0]
    assert [o for o in t.outcomes if o.step.kind.value in ("put_connection", "enable_branch_to_branch")] == []
    assert not any(r.op in ("bgp.put", "hub.put") for r in emulator.requests)
    assert t.plan is not None
    reasons = {s.identity.split("|")[1]: s.reason for s in t.plan.skipped}
    assert "Route Server not ready" in reasons["PEER_MISSING"] and "Route Server not ready" in reasons["BRANCH_TO_BRANCH_DISABLED"]
