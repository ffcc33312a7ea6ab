"""Whole passes through the service on the ARM emulator (with its emulated agent) and Azurite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from emulator import ArmEmulator, Fault
from localenv import scenarios
from localenv.azurite import Azurite
from localenv.demo import TOKEN_SETTING, demo_desired, demo_env
from reconciler import desired
from reconciler.composition import Runtime
from reconciler.drift import DriftCode
from reconciler.ledger import Ledger
from reconciler.service import PassReport, reconcile
from reconciler.settings import load_settings
from reconciler.trigger import Trigger
from tests.e2e.invariants import all_agree

pytestmark = pytest.mark.azurite


def env(emu: ArmEmulator, conn: str, prefix: str) -> dict[str, str]:
    return {
        **demo_env(emu, conn),
        "ARS_TABLE_PREFIX": prefix,
        "ARS_VERIFY_INTERVAL": "0.05",
        "ARS_VERIFY_TIMEOUT": "15",
        "ARS_LEASE_SECONDS": "15",
        "ARS_ARM_RETRY_BACKOFF": "0.01",
        "ARS_ALERT_HOLD_DOWN": "180",
    }


@pytest.fixture(autouse=True)
def agent_token(emulator: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(TOKEN_SETTING, emulator.world.nva(scenarios.NVA_IP).agent_token)
    yield


@pytest.fixture
def state(emulator: ArmEmulator) -> desired.DesiredState:
    return demo_desired(emulator)


@pytest.fixture
async def runtime(emulator: ArmEmulator, azurite: Azurite, storage_prefix: str) -> AsyncIterator[Runtime]:
    async with Runtime(load_settings(env(emulator, azurite.connection_string, storage_prefix))) as rt:
        yield rt


def intents(emu: ArmEmulator) -> int:
    return sum(1 for r in emu.requests if r.op == "agent.intent")


async def run(rt: Runtime, state: desired.DesiredState, **kw: Any) -> PassReport:
    assert rt.services is not None
    return await reconcile(rt.services, state, trigger=kw.pop("trigger", Trigger.CLI), **kw)


async def test_drift_is_fixed_verified_and_resolved_in_the_ledger(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator
) -> None:
    scenarios.next_hop_not_set(emulator)
    report = await run(runtime, state)
    t = report.targets[0]
    assert {d.code for d in t.drifts} >= {DriftCode.ROUTE_NEXT_HOP_WRONG}
    assert [o.outcome for o in t.outcomes] == ["fixed"]
    assert t.remaining == [] and report.exit_code == 0
    assert intents(emulator) == 1
    again = await run(runtime, state)
    assert again.targets[0].drifts == [] and again.targets[0].outcomes == []
    assert intents(emulator) == 1  # the second pass changes nothing
    assert runtime.ledger is not None
    assert await runtime.ledger.open_drifts() == []
    history = await runtime.ledger.history(limit=50)
    assert {h["kind"] for h in history} >= {"opened", "resolved", "action"}


async def test_drift_is_in_the_ledger_while_its_fix_is_still_in_flight(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator
) -> None:
    # The fix is slow (an agent taking 3 s, or a bgpConnection PUT and its verification): the
    # ledger must show the drift from the moment it is found, not when the pass ends.
    scenarios.next_hop_not_set(emulator)
    emulator.inject("agent.intent", Fault.latency(seconds=3.0, count=1))
    assert runtime.ledger is not None
    task = asyncio.create_task(run(runtime, state))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    seen: set[str] = set()
    while not seen and not task.done() and loop.time() < deadline:
        seen = {d.code for d in await runtime.ledger.open_drifts()}
        await asyncio.sleep(0.05)
    in_flight = not task.done()
    report = await task
    assert DriftCode.ROUTE_NEXT_HOP_WRONG in seen and in_flight, "the drift appeared only after the pass"
    assert [o.outcome for o in report.targets[0].outcomes] == ["fixed"]
    assert await runtime.ledger.open_drifts() == []
    await all_agree(runtime, [report])


async def test_twenty_concurrent_passes_cause_exactly_one_fix(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, state: desired.DesiredState
) -> None:
    scenarios.next_hop_not_set(emulator)
    settings = load_settings(env(emulator, azurite.connection_string, storage_prefix))
    runtimes = [Runtime(settings) for _ in range(20)]  # 20 independent workers
    for rt in runtimes:
        await rt.__aenter__()
    try:
        reports = await asyncio.gather(*(run(rt, state, trigger=Trigger.TIMER) for i, rt in enumerate(runtimes)))
    finally:
        for rt in runtimes:
            await rt.__aexit__(None, None, None)
    statuses = sorted(r.targets[0].status for r in reports)
    assert intents(emulator) == 1
    assert len(reports) == 20
    fixers = [r for r in reports if r.targets[0].outcomes]
    assert len(fixers) == 1 and fixers[0].targets[0].outcomes[0].outcome == "fixed"
    # The rest either saw the lease taken or ran after the fix and found nothing to do.
    assert set(statuses) <= {"ok", "locked"}
    assert all(r.targets[0].errors for r in reports if r.targets[0].status == "locked")


async def test_drift_fixed_by_hand_is_resolved_with_duration(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator
) -> None:
    scenarios.branch_to_branch_off(emulator)  # Azure writes are off: it stays open
    await run(runtime, state)
    await run(runtime, state)
    assert runtime.ledger is not None
    open_ = {d.code: d for d in await runtime.ledger.open_drifts()}
    assert open_["BRANCH_TO_BRANCH_DISABLED"].occurrences == 2
    assert len([d for d in await runtime.ledger.open_drifts() if d.code == "BRANCH_TO_BRANCH_DISABLED"]) == 1
    with emulator.world.lock:
        emulator.world.route_server("sub-1", "rg-hub", "ars-hub").branch_to_branch = True
    report = await run(runtime, state)
    assert report.targets[0].ledger["resolved"] == 3
    assert await runtime.ledger.open_drifts() == []
    resolved = [h for h in await runtime.ledger.history(limit=50) if h["kind"] == "resolved"]
    assert any(h["code"] == "BRANCH_TO_BRANCH_DISABLED" and float(h["duration_s"]) > 0 for h in resolved)  # type: ignore[arg-type]


COLLECTOR_CALLS = ["hub.get", "bgp.list", "routes.learned", "firewall.get", "agent.state"]


@pytest.mark.parametrize("op", COLLECTOR_CALLS)
async def test_failed_read_never_produces_an_action(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator, op: str
) -> None:
    scenarios.next_hop_not_set(emulator)
    emulator.inject(op, Fault.error(status=500, count=None))
    report = await run(runtime, state)
    t = report.targets[0]
    assert intents(emulator) == 0
    assert t.outcomes == []
    assert any(d.code == DriftCode.OBSERVATION_FAILED for d in t.drifts)


async def test_dry_run_shows_exactly_the_steps_apply_runs(
    runtime: Runtime, state: desired.DesiredState, emulator: ArmEmulator
) -> None:
    scenarios.firewall_redeployed(emulator)
    dry = await run(runtime, state, dry_run=True)
    assert intents(emulator) == 0
    real = await run(runtime, state)
    assert [s.describe() for s in dry.targets[0].plan.steps] == [o.step.describe() for o in real.targets[0].outcomes]  # type: ignore[union-attr]


async def test_suspended_target_is_observed_and_recorded_but_not_changed(
    runtime: Runtime, emulator: ArmEmulator, state: desired.DesiredState
) -> None:
    doc = state.model_dump(mode="json")
    doc["targets"][0]["suspend"] = True
    suspended = desired.parse(doc)
    scenarios.next_hop_not_set(emulator)
    report = await run(runtime, suspended)
    assert intents(emulator) == 0
    assert report.targets[0].drifts and report.exit_code == 2
    assert runtime.ledger is not None and await runtime.ledger.open_drifts()


async def test_storage_outage_mid_pass_is_reported_and_the_next_pass_restores_the_truth(
    emulator: ArmEmulator, private_azurite: Azurite, storage_prefix: str, state: desired.DesiredState
) -> None:
    settings = load_settings(env(emulator, private_azurite.connection_string, storage_prefix))
    async with Runtime(settings) as rt:
        scenarios.branch_to_branch_off(emulator)
        await run(rt, state)  # opens the drift
        # Storage goes away after the lease is taken: the ARM read is slowed so the stop lands mid-pass.
        emulator.inject("hub.get", Fault.latency(seconds=1.0, count=1))
        seen = len([r for r in emulator.requests if r.op == "hub.get"])
        task = asyncio.create_task(run(rt, state))
        deadline = asyncio.get_running_loop().time() + 10
        while len([r for r in emulator.requests if r.op == "hub.get"]) == seen:  # the pass is now reading ARM
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        private_azurite.stop()
        report = await task
        stages = {s for s, _ in report.targets[0].errors} | {s for s, _ in report.errors}
        assert "ledger" in stages or "lease" in stages
        assert report.exit_code == 1
        private_azurite.start()
        with emulator.world.lock:
            emulator.world.route_server("sub-1", "rg-hub", "ars-hub").branch_to_branch = True
        healed = await run(rt, state)
        assert healed.exit_code == 0, healed.to_dict()
    async with Ledger(private_azurite.connection_string, table_prefix=storage_prefix) as led:
        assert await led.open_drifts() == []
        resolved = {h["code"] for h in await led.history(limit=50) if h["kind"] == "resolved"}
        assert "BRANCH_TO_BRANCH_DISABLED" in resolved


@pytest.mark.parametrize(
    ("op", "fault"),
    [
        ("agent.intent", Fault.error(503, count=None, retry_after=0.01)),
        ("agent.intent", Fault.throttle(count=None, retry_after=0.01)),
        ("bgp.put", Fault.busy(count=None)),  # 409 AnotherOperationInProgress on an Azure write
    ],
    ids=["agent-503", "agent-429", "arm-409"],
)
async def test_a_deferred_step_is_recorded_in_the_ledger_and_never_ends_the_target_in_error(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, state: desired.DesiredState, op: str, fault: Fault
) -> None:
    if op == "bgp.put":
        doc = state.model_dump(mode="json")
        doc["targets"][0]["policy"]["azure_writes"] = True
        state = desired.parse(doc)
        with emulator.world.lock:
            emulator.world.route_server("sub-1", "rg-hub", "ars-hub").connections.clear()
    else:
        scenarios.next_hop_not_set(emulator)
    emulator.inject(op, fault)
    async with Runtime(load_settings(env(emulator, azurite.connection_string, storage_prefix))) as rt:
        report = await run(rt, state)
        t = report.targets[0]
        deferred = [o for o in t.outcomes if o.outcome == "deferred"]
        assert deferred and t.status == "drift" and t.errors == [], t.to_dict()
        assert report.counts()["deferred"] == len(deferred)
        events = [h for h in await rt.ledger.history(target=t.target, limit=100) if h["kind"] == "action"]
        recorded = {(h["identity"], h["outcome"], h["pass_id"]) for h in events}
        for o in deferred:
            for identity in o.step.fixes:
                assert (identity, "deferred", report.pass_id) in recorded, events
        open_ = {d.identity: d for d in await rt.ledger.open_drifts(target=t.target)}
        assert all(open_[i].last_outcome == "deferred" for o in deferred for i in o.step.fixes)


async def test_a_pass_record_storage_refused_is_written_by_the_next_pass_of_the_same_worker(
    emulator: ArmEmulator, private_azurite: Azurite, storage_prefix: str, state: desired.DesiredState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(env(emulator, private_azurite.connection_string, storage_prefix))
    async with Runtime(settings) as rt:
        await run(rt, state)
        private_azurite.stop()
        lost = await run(rt, state)
        assert any(s == "ledger" for s, _ in lost.errors), lost.to_dict()
        private_azurite.start()
        with caplog.at_level("INFO", logger="reconciler.service"):
            later = await run(rt, state)
        assert later.errors == [], later.to_dict()
        recorded = [p.pass_id for p in await rt.ledger.passes(limit=10)]
        assert lost.pass_id in recorded and later.pass_id in recorded
    # Every pass record is also a structured log event (App Insights keeps it if the worker dies).
    events = [r for r in caplog.records if getattr(r, "event", None) == "ars.pass"]
    assert [getattr(r, "pass_id", None) for r in events] == [later.pass_id]
    assert getattr(events[0], "targets", None) == (state.targets[0].name,)
    assert isinstance(getattr(events[0], "count_drifts", None), int)


async def test_concurrent_passes_of_one_worker_write_every_pass_record(
    runtime: Runtime, state: desired.DesiredState
) -> None:
    # A worker runs its timer pass, event-driven passes and HTTP passes on one event loop: their
    # pass-record writes interleave over the worker's shared backlog of unwritten records.
    reports = await asyncio.gather(*(run(runtime, state, trigger=Trigger.TIMER) for i in range(6)))
    assert all(not r.errors for r in reports), [r.errors for r in reports]
    assert runtime.ledger is not None and runtime.services is not None
    written = {p.pass_id for p in await runtime.ledger.passes(limit=20)}
    assert written == {r.pass_id for r in reports}
    assert not runtime.services.unwritten
