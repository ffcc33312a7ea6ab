"""Fault matrix: every stage of a pass, every fault that fits it, on the emulator + Azurite + agents.

Each case breaks both targets of the two-target fleet (so a fix is due on each), opens the drift
in the ledger with a suspended pass, injects one fault into target A's stage, runs a pass, clears
the fault and runs the next pass. After every case:

- no fix is attempted from unknown state (a failed read that feeds the NVA intent -> no change);
- no fix is applied twice (the emulated agents count the changes they really made);
- the faulted pass reports the fault against its stage and target A, and target B finishes;
- nothing is lost: the next pass restores the truth -- world healthy, ledger without open drift,
  every pass recorded, the outbox empty and Teams told.
- the report, the ledger and the cards agree (tests/e2e/invariants.py): no `internal` error, every
  pass has its pass record, every step outcome is in the ledger's history under its pass and on
  the pass's card as the report shows it.

The process-kill case (a pass SIGKILLed mid-flight in a subprocess) lives at the end of the file.
CI runs 92 cases; `FAULT_MATRIX=full` adds every fault on the reads that do not feed the fix (107).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulator import ArmEmulator, Fault
from emulator.world import OperationLroStyle
from localenv.azurite import Azurite
from localenv.webhook import Reply, WebhookReceiver
from reconciler import desired
from reconciler.composition import Runtime
from reconciler.errors import ReconcilerError
from reconciler.ledger import Ledger, PassRecord
from reconciler.service import PassReport
from reconciler.settings import load_settings
from tests.e2e.harness import (
    NVA,
    ROOT,
    SUB,
    A,
    B,
    Changes,
    blind_reads,
    break_next_hop,
    fleet_desired,
    free_port,
    nva_healthy,
    run_pass,
    set_agent_tokens,
    settings_env,
    target_report,
)
from tests.e2e.invariants import all_agree, cards_agree, ledger_agrees

pytestmark = [pytest.mark.azurite, pytest.mark.usefixtures("settled")]


@pytest.fixture
def changes(emulator: ArmEmulator, monkeypatch: pytest.MonkeyPatch) -> Changes:
    set_agent_tokens(emulator, monkeypatch)
    return Changes().install(monkeypatch)


@dataclass
class Story:
    """One case's three passes and what the fleet looked like around them."""

    emu: ArmEmulator
    changes: Changes
    passes: list[PassReport] = field(default_factory=list)

    @property
    def faulted(self) -> PassReport:
        return self.passes[1]


async def opened(rt: Runtime, emu: ArmEmulator, story: Story) -> None:
    """Break both NVAs and record the drift (suspended: observe and record only)."""
    break_next_hop(emu, A)
    break_next_hop(emu, B)
    first = await run_pass(rt, fleet_desired(emu, suspend=True))
    assert {t.status for t in first.targets} == {"drift"}
    story.passes.append(first)


async def healed(rt: Runtime, story: Story, webhook: WebhookReceiver | None = None) -> None:
    """The pass after the fault: the truth is restored and nothing was lost or done twice."""
    emu = story.emu
    emu.clear_faults()
    last = await run_pass(rt, fleet_desired(emu))
    story.passes.append(last)
    for name in (A, B):
        t = target_report(last, name)
        assert t.status == "ok" and t.remaining == [] and t.errors == [], t.to_dict()
        assert nva_healthy(emu, name)
        assert story.changes.changed(name) == 1, f"{name}: {story.changes.applied}"  # fixed exactly once
    assert rt.ledger is not None
    assert await rt.ledger.open_drifts() == []
    resolved = {str(h["identity"]) for h in await rt.ledger.history(target=A, limit=200) if h["kind"] == "resolved"}
    assert any(i.startswith(f"{A}|ROUTE_NEXT_HOP_WRONG|") for i in resolved), resolved  # the drift was not lost
    # Every pass of the story: no internal error; its pass record (a record storage refused was
    # written by the next pass of the same worker); each step's outcome in the ledger's history and
    # on the pass's Teams card as the report shows it.
    await all_agree(rt, story.passes)
    if webhook is not None:
        assert rt.services is not None and rt.services.alerts is not None
        assert await rt.services.alerts.store.pending() == []
        assert webhook.accepted(), "Teams heard nothing about a drift that fired and resolved"


def other_target_finished(report: PassReport) -> None:
    t = target_report(report, B)
    assert t.status == "ok" and t.errors == [], t.to_dict()
    assert [o.outcome for o in t.outcomes] == ["fixed"]


# ---- reads ------------------------------------------------------------------------------------

# The reads the NVA intent is built from (plan._NVA_INPUTS + the peer's own routes and agent).
FEEDS_FIX = {"hub.get", "bgp.list", "routes.learned", "firewall.get", "agent.state"}
ARM_READS = ["hub.get", "bgp.list", "routes.learned", "gateway.learned", "gateway.advertised",
             "firewall.get", "firewall.health", "vnet.get", "routetable.get"]  # fmt: skip
LRO_READS = ["routes.learned", "gateway.learned", "gateway.advertised"]
PERSISTENT_FAULTS: dict[str, Fault] = {
    "timeout": Fault.latency(seconds=1.5),
    "429-retry-after": Fault.throttle(count=None, retry_after=0.01),
    "500": Fault.error(500, count=None),
    "503-retry-after": Fault.error(503, count=None, retry_after=0.01),
    "malformed-json": Fault.malformed(count=None),
    "401-wrong-token": Fault.error(401, count=None, code="InvalidAuthenticationToken"),
}
# Reads that do not feed the fix share their error path with the 500 case (an HttpResponseError ->
# Unknown); CI tries three faults on them, `FAULT_MATRIX=full` all six.
FULL = os.environ.get("FAULT_MATRIX", "") == "full"
SIDE_READ_FAULTS = list(PERSISTENT_FAULTS) if FULL else ["timeout", "500", "malformed-json"]
READ_CASES = [(op, name) for op in ARM_READS
              for name in (PERSISTENT_FAULTS if op in FEEDS_FIX else SIDE_READ_FAULTS)]  # fmt: skip
READ_CASES += [(op, "lro-failed") for op in LRO_READS] + [("routes.learned", "empty-instance-map")]
AGENT_STATE_CASES = [("agent.state", n) for n in ("timeout", "429-retry-after", "500", "503-retry-after", "malformed-json")]


def fault_named(name: str) -> Fault:
    if name == "lro-failed":
        return Fault.lro_failed(count=None)
    if name == "empty-instance-map":
        return Fault.empty_instances(count=None)
    return PERSISTENT_FAULTS[name]


def scope(op: str) -> dict[str, str]:
    return {"resource": NVA[A]} if op.startswith("agent.") else {"subscription": SUB[A]}


@pytest.mark.parametrize(("op", "fault_name"), READ_CASES + AGENT_STATE_CASES, ids=lambda v: str(v))
async def test_a_failed_read_blinds_its_target_only_and_the_next_pass_restores_the_truth(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, webhook: WebhookReceiver, changes: Changes,
    op: str, fault_name: str,
) -> None:
    extra = ({"ARS_AGENT_TIMEOUT": "0.3"} if op.startswith("agent.") else {"ARS_ARM_READ_TIMEOUT": "0.6"}) if fault_name == "timeout" else {}
    # Alerts ride along on a third of the cases: the Teams pacer makes every pass with cards slower.
    hook = webhook if fault_name in ("500", "lro-failed", "empty-instance-map") else None
    if hook is not None:
        extra["ARS_TEAMS_WEBHOOK_URL"] = hook.url
    env = settings_env(emulator, azurite.connection_string, storage_prefix, **extra)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        emulator.inject(op, fault_named(fault_name), **scope(op))
        story.passes.append(await run_pass(rt, fleet_desired(emulator)))
        a = target_report(story.faulted, A)
        assert op in blind_reads(a), a.to_dict()  # the fault, named by its stage, on its target
        assert a.status == "drift" and story.faulted.exit_code == 2
        if op in FEEDS_FIX:
            assert a.outcomes == [] and changes.changed(A) == 0  # nothing fixed from unknown state
        other_target_finished(story.faulted)
        await healed(rt, story, hook)


@pytest.mark.parametrize("op", ["hub.get", "routes.learned", "firewall.get", "agent.state"])
@pytest.mark.parametrize("fault", [Fault.throttle(count=2, retry_after=0.01), Fault.error(503, count=1)],
                         ids=["429-twice", "503-once"])
async def test_a_transient_read_fault_is_retried_within_the_pass_and_fixes_once(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes, op: str, fault: Fault
) -> None:
    story = Story(emulator, changes)
    async with Runtime(load_settings(settings_env(emulator, azurite.connection_string, storage_prefix))) as rt:
        await opened(rt, emulator, story)
        emulator.inject(op, fault, **scope(op))
        story.passes.append(await run_pass(rt, fleet_desired(emulator)))
        a = target_report(story.faulted, A)
        assert [o.outcome for o in a.outcomes] == ["fixed"] and a.remaining == [], a.to_dict()
        assert any(r.op == op and r.status in (429, 503) for r in emulator.requests)  # the fault did fire
        other_target_finished(story.faulted)
        await healed(rt, story)


# ---- LRO styles (notes §5): how a route query's 202 points at its answer --------------------------

LRO_STYLE_CASES = [(op, style) for op in LRO_READS for style in ("location", "azure-async-operation", "both")]


@pytest.mark.parametrize(("op", "style"), LRO_STYLE_CASES, ids=lambda v: str(v))
async def test_every_lro_style_of_a_route_query_is_read_or_unknown_never_no_routes(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes, op: str, style: str
) -> None:
    story = Story(emulator, changes)
    async with Runtime(load_settings(settings_env(emulator, azurite.connection_string, storage_prefix))) as rt:
        await opened(rt, emulator, story)
        with emulator.world.lock:
            emulator.world.lro_styles = [OperationLroStyle(op, style, subscription=SUB[A])]  # type: ignore[arg-type]
        story.passes.append(await run_pass(rt, fleet_desired(emulator)))
        a = target_report(story.faulted, A)
        if style == "azure-async-operation":
            # Microsoft's examples answer so: the client ends holding a status, which is no route list.
            assert op in blind_reads(a), a.to_dict()
            if op in FEEDS_FIX:
                assert a.outcomes == [] and changes.changed(A) == 0
        else:
            assert op not in blind_reads(a), a.to_dict()
            assert [o.outcome for o in a.outcomes] == ["fixed"] and a.remaining == [], a.to_dict()
        other_target_finished(story.faulted)
        with emulator.world.lock:
            emulator.world.lro_styles = []
        await healed(rt, story)


# ---- agent apply ------------------------------------------------------------------------------

APPLY_CASES = {
    # fault on PUT /v1/bgp/intent -> the step's outcome in the faulted pass
    "timeout": (Fault.latency(seconds=1.0), "deferred"),
    "429-retry-after": (Fault.throttle(count=None, retry_after=0.01), "deferred"),
    "500": (Fault.error(500, count=None), "deferred"),
    "503-retry-after": (Fault.error(503, count=None, retry_after=0.01), "deferred"),
    "409-busy": (Fault.busy(count=None), "failed"),
    "malformed-json": (Fault.malformed(count=None), "failed"),  # applied, but the answer is garbage
    "500-once": (Fault.error(500, count=1), "fixed"),  # the agent client's own retry
}


@pytest.mark.parametrize("case", list(APPLY_CASES))
async def test_a_failed_agent_apply_is_an_outcome_of_its_step_and_is_never_applied_twice(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, webhook: WebhookReceiver, changes: Changes,
    case: str,
) -> None:
    fault, expected = APPLY_CASES[case]
    extra = {"ARS_AGENT_TIMEOUT": "0.3"} if case == "timeout" else {}
    env = settings_env(emulator, azurite.connection_string, storage_prefix, **extra)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:  # no Teams yet: the faulted pass fires the alert
        await opened(rt, emulator, story)
    async with Runtime(load_settings({**env, "ARS_TEAMS_WEBHOOK_URL": webhook.url})) as rt:
        emulator.inject("agent.intent", fault, resource=NVA[A])
        story.passes.append(await run_pass(rt, fleet_desired(emulator)))
        a = target_report(story.faulted, A)
        assert [o.outcome for o in a.outcomes] == [expected], a.to_dict()
        assert a.outcomes[0].detail
        # A deferred or failed step is an outcome: the target is not in error and the ledger has it.
        assert a.status in ("ok", "drift") and a.errors == [], a.to_dict()
        await ledger_agrees(rt, [story.faulted])
        # The pass's cards say what the report says ("Ran <step>: deferred" on A's firing card).
        assert await cards_agree(rt, [story.faulted]) >= 2
        if expected != "fixed":
            assert a.remaining or case in ("malformed-json", "timeout"), a.to_dict()
        other_target_finished(story.faulted)
        if case == "timeout":
            # The agent went on applying after the client gave up; wait for the late answers.
            deadline = time.monotonic() + 10
            while sum(1 for r in emulator.requests if r.op == "agent.intent") < 3:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        await healed(rt, story, webhook)


# ---- Azure writes -----------------------------------------------------------------------------


def with_azure_writes(emu: ArmEmulator, name: str) -> desired.DesiredState:
    doc = fleet_desired(emu).model_dump(mode="json")
    for t in doc["targets"]:
        if t["name"] == name:
            t["policy"]["azure_writes"] = True
    return desired.parse(doc, "fleet")


@pytest.mark.parametrize(
    "fault",
    [Fault.error(412, count=None, code="PreconditionFailed"), Fault.busy(count=None)],
    ids=["412-hub-changed-since-read", "409-another-operation"],
)
async def test_a_refused_hub_write_is_deferred_recorded_and_done_by_a_later_pass(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, webhook: WebhookReceiver, changes: Changes,
    fault: Fault,
) -> None:
    env = settings_env(emulator, azurite.connection_string, storage_prefix, ARS_TEAMS_WEBHOOK_URL=webhook.url)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        with emulator.world.lock:
            emulator.world.route_server(SUB[A], "rg-hub", "ars-hub").branch_to_branch = False
        emulator.inject("hub.put", fault, subscription=SUB[A])
        story.passes.append(await run_pass(rt, with_azure_writes(emulator, A)))
        a = target_report(story.faulted, A)
        outcomes = {o.step.kind.value: o.outcome for o in a.outcomes}
        assert outcomes == {"enable_branch_to_branch": "deferred", "agent_intent": "fixed"}, a.to_dict()
        assert a.status == "drift" and a.errors == [], a.to_dict()
        await ledger_agrees(rt, [story.faulted])  # the deferred write is in the ledger, not an internal error
        other_target_finished(story.faulted)
        emulator.clear_faults()
        story.passes.append(await run_pass(rt, with_azure_writes(emulator, A)))
        assert [o.outcome for o in target_report(story.passes[-1], A).outcomes] == ["fixed"]
        assert emulator.world.route_server(SUB[A], "rg-hub", "ars-hub").branch_to_branch is True
        await healed(rt, story, webhook)


async def test_a_hub_changed_between_the_writes_get_and_put_is_not_overwritten_and_is_deferred(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes
) -> None:
    """The emulator's own If-Match check (no injected 412): another writer changes the hub while
    our PUT is on its way; ARM answers 412, nothing is overwritten, the step is deferred."""
    env = settings_env(emulator, azurite.connection_string, storage_prefix)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        hub_a = emulator.world.route_server(SUB[A], "rg-hub", "ars-hub")
        with emulator.world.lock:
            hub_a.branch_to_branch = False
        gets = sum(1 for r in emulator.requests if r.op == "hub.get" and r.subscription == SUB[A])
        emulator.inject("hub.put", Fault.latency(seconds=1.0, count=1), subscription=SUB[A])
        task = asyncio.create_task(run_pass(rt, with_azure_writes(emulator, A)))
        deadline = time.monotonic() + 10
        # The pass reads the hub once to observe and once more for the write: then its PUT is on
        # the wire (held by the latency) when another writer bumps the hub's ETag.
        while sum(1 for r in emulator.requests if r.op == "hub.get" and r.subscription == SUB[A]) < gets + 2:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.01)
        with emulator.world.lock:
            hub_a.generation += 1
        story.passes.append(await task)
        a = target_report(story.faulted, A)
        outcomes = {o.step.kind.value: (o.outcome, o.detail) for o in a.outcomes}
        assert outcomes["enable_branch_to_branch"][0] == "deferred", a.to_dict()
        assert "412" in outcomes["enable_branch_to_branch"][1]
        assert hub_a.branch_to_branch is False  # the other writer's hub was not overwritten
        assert any(r.op == "hub.put" and r.status == 412 for r in emulator.requests)
        story.passes.append(await run_pass(rt, with_azure_writes(emulator, A)))
        assert hub_a.branch_to_branch is True
        await healed(rt, story)


# ---- verify -----------------------------------------------------------------------------------

VERIFY_CASES = {
    "routes.learned-500": ("routes.learned", Fault.error(500, count=None)),
    "routes.learned-empty-instance-map": ("routes.learned", Fault.empty_instances(count=None)),
    "routes.learned-lro-failed": ("routes.learned", Fault.lro_failed(count=None)),
    "hub.get-malformed-json": ("hub.get", Fault.malformed(count=None)),
    "agent.state-503": ("agent.state", Fault.error(503, count=None)),
}


@pytest.mark.parametrize("case", list(VERIFY_CASES))
async def test_a_fault_while_verifying_leaves_the_fix_unconfirmed_and_the_next_pass_confirms_it(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes, case: str
) -> None:
    op, fault = VERIFY_CASES[case]

    def arm_after_a_is_fixed(ip: str) -> None:
        if ip == NVA[A]:
            emulator.inject(op, fault, **scope(op))

    changes.after_apply.append(arm_after_a_is_fixed)
    story = Story(emulator, changes)
    env = settings_env(emulator, azurite.connection_string, storage_prefix, ARS_VERIFY_TIMEOUT="0.3")
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        story.passes.append(await run_pass(rt, fleet_desired(emulator)))
        a = target_report(story.faulted, A)
        assert [o.outcome for o in a.outcomes] == ["not_confirmed"], a.to_dict()
        assert "re-observation failed" in a.outcomes[0].detail
        assert op in blind_reads(a)
        assert changes.changed(A) == 1
        other_target_finished(story.faulted)
        changes.after_apply.clear()
        await healed(rt, story)


# ---- whole dependencies unreachable -----------------------------------------------------------


@pytest.mark.parametrize("how", ["connection-refused", "tls-without-ca"])
async def test_arm_unreachable_blinds_every_target_and_changes_nothing(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes, how: str
) -> None:
    good = settings_env(emulator, azurite.connection_string, storage_prefix)
    bad = dict(good)
    if how == "connection-refused":
        bad["ARS_ARM_ENDPOINT"] = f"https://127.0.0.1:{free_port()}"
    else:
        del bad["ARS_ARM_CA_BUNDLE"]  # the system store does not know the emulator's test CA
    story = Story(emulator, changes)
    async with Runtime(load_settings(good)) as rt:
        await opened(rt, emulator, story)
    async with Runtime(load_settings(bad)) as rt:
        report = await run_pass(rt, fleet_desired(emulator))
    story.passes.append(report)
    for name in (A, B):
        t = target_report(report, name)
        assert {"hub.get", "bgp.list", "firewall.get"} <= blind_reads(t), t.to_dict()
        assert t.outcomes == []
    assert changes.applied == []
    async with Runtime(load_settings(good)) as rt:
        await healed(rt, story)


@pytest.mark.parametrize("how", ["connection-refused", "wrong-token", "tls-without-ca"])
async def test_an_unreachable_agent_blinds_its_peer_and_changes_nothing_there(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes,
    monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    env = settings_env(emulator, azurite.connection_string, storage_prefix)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
    state = fleet_desired(emulator)
    bad_env = dict(env)
    if how == "connection-refused":
        state = fleet_desired(emulator, agent_urls={A: f"https://127.0.0.1:{free_port()}"})
    elif how == "wrong-token":
        set_agent_tokens(emulator, monkeypatch, wrong=(A,))
    else:
        del bad_env["ARS_AGENT_CA_BUNDLE"]
    async with Runtime(load_settings(bad_env)) as rt:
        report = await run_pass(rt, state)
    story.passes.append(report)
    a = target_report(report, A)
    assert "agent.state" in blind_reads(a) and a.outcomes == [], a.to_dict()
    assert changes.changed(A) == 0
    if how == "tls-without-ca":
        b = target_report(report, B)  # one CA setting serves every agent: B is blind too
        assert "agent.state" in blind_reads(b) and changes.applied == []
    else:
        other_target_finished(report)
    set_agent_tokens(emulator, monkeypatch)
    async with Runtime(load_settings(env)) as rt:
        await healed(rt, story)


# ---- storage: lease and ledger ----------------------------------------------------------------


async def test_storage_down_before_a_pass_means_no_lease_and_no_fix(
    emulator: ArmEmulator, private_azurite: Azurite, storage_prefix: str, changes: Changes
) -> None:
    env = settings_env(emulator, private_azurite.connection_string, storage_prefix)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        private_azurite.stop()
        report = await run_pass(rt, fleet_desired(emulator))
        story.passes.append(report)
        for name in (A, B):
            t = target_report(report, name)
            assert t.status == "error" and [s for s, _ in t.errors] == ["lease"], t.to_dict()
        assert changes.applied == []  # one writer per target: without the lease, nobody writes
        assert any(s == "ledger" for s, _ in report.errors)  # the pass record could not be written
        assert report.exit_code == 1
        private_azurite.start()
        await healed(rt, story)


async def test_storage_lost_mid_pass_is_reported_as_ledger_and_the_next_pass_records_the_fix(
    emulator: ArmEmulator, private_azurite: Azurite, storage_prefix: str, changes: Changes
) -> None:
    env = settings_env(emulator, private_azurite.connection_string, storage_prefix)
    story = Story(emulator, changes)
    changes.after_apply.append(lambda ip: private_azurite.stop() if ip == NVA[A] else None)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        report = await run_pass(rt, fleet_desired(emulator))
        story.passes.append(report)
        stages = {s for t in report.targets for s, _ in t.errors} | {s for s, _ in report.errors}
        assert "ledger" in stages, report.to_dict()
        assert report.exit_code == 1
        assert nva_healthy(emulator, A)  # the fix itself went through before storage vanished
        changes.after_apply.clear()
        private_azurite.start()
        await healed(rt, story)


class StorageDiesBeforeThePassRecord:
    """The worker's real ledger, except that storage goes down just before the next pass record."""

    def __init__(self, ledger: Ledger, azurite: Azurite) -> None:
        self.ledger, self.azurite, self.armed = ledger, azurite, True

    async def record_target(self, *args: Any, **kw: Any) -> Any:
        return await self.ledger.record_target(*args, **kw)

    async def record_pass(self, record: PassRecord) -> None:
        if self.armed:
            self.armed = False
            self.azurite.stop()
        await self.ledger.record_pass(record)


async def test_storage_down_only_for_the_pass_record_keeps_it_for_the_next_pass_of_the_worker(
    emulator: ArmEmulator, private_azurite: Azurite, storage_prefix: str, changes: Changes
) -> None:
    env = settings_env(emulator, private_azurite.connection_string, storage_prefix)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        rt.services.ledger = StorageDiesBeforeThePassRecord(rt.ledger, private_azurite)
        report = await run_pass(rt, fleet_desired(emulator))
        story.passes.append(report)
        for name in (A, B):  # both targets were fixed and recorded; only the pass record is late
            t = target_report(report, name)
            assert [o.outcome for o in t.outcomes] == ["fixed"] and t.errors == [], t.to_dict()
        assert [s for s, _ in report.errors] == ["ledger"] and "kept for the next pass" in report.errors[0][1]
        assert len(rt.services.unwritten) == 1
        private_azurite.start()
        rt.services.ledger = rt.ledger
        await healed(rt, story)  # all_agree: the late record is there, counts and all
        assert len(rt.services.unwritten) == 0


async def test_a_wrong_storage_key_refuses_to_start_with_one_clear_error(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str
) -> None:
    conn = azurite.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    with pytest.raises(ReconcilerError) as err:
        async with Runtime(load_settings(settings_env(emulator, conn, storage_prefix))):
            pass
    assert "AccountKey" not in str(err.value) and "\n" not in str(err.value).strip()


# ---- Teams ------------------------------------------------------------------------------------

TEAMS_CASES = {
    "500": Reply(500, retry_after="0", body=b'{"error":{"code":"InternalServerError"}}'),
    "429-retry-after": Reply(429, retry_after="0.01", body=b'{"error":{"code":"TooManyRequests"}}'),
}


@pytest.mark.parametrize("case", list(TEAMS_CASES))
async def test_teams_down_keeps_alerts_in_the_outbox_and_the_next_pass_delivers_them(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, webhook: WebhookReceiver, changes: Changes,
    case: str,
) -> None:
    env = settings_env(emulator, azurite.connection_string, storage_prefix, ARS_TEAMS_WEBHOOK_URL=webhook.url)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
        webhook.default = TEAMS_CASES[case]
        report = await run_pass(rt, fleet_desired(emulator))
        story.passes.append(report)
        delivery = report.alerts["delivery"]
        assert delivery["pending"] > 0 and delivery["errors"], report.alerts
        other_target_finished(report)
        assert [o.outcome for o in target_report(report, A).outcomes] == ["fixed"]
        webhook.default = Reply(202)
        await healed(rt, story, webhook)
        sent = [e for t in (A, B) for e in await rt.services.alerts.store.entries(t)]  # type: ignore[union-attr]
        assert sent and all(e.sent for e in sent)


# ---- process killed in the middle of a pass ---------------------------------------------------


@pytest.fixture
def kill_guard() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


@pytest.mark.slow
async def test_a_pass_killed_between_fix_and_record_is_completed_by_the_next_after_the_lease_expires(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, changes: Changes, tmp_path: Path,
    kill_guard: list[subprocess.Popen[bytes]],
) -> None:
    env = settings_env(emulator, azurite.connection_string, storage_prefix)
    story = Story(emulator, changes)
    async with Runtime(load_settings(env)) as rt:
        await opened(rt, emulator, story)
    # After A's fix lands, every ARM read of A stalls: the child is then stuck verifying, with the
    # fix applied and nothing recorded, holding A's lease. That is where it dies.
    stall = Fault.latency(seconds=5, count=None)
    changes.after_apply.append(lambda ip: emulator.inject("hub.get", stall, subscription=SUB[A]) if ip == NVA[A] else None)
    doc = tmp_path / "fleet.json"
    doc.write_text(fleet_desired(emulator).model_dump_json())
    child_env = {**os.environ, **env}
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", str(doc), "--target", A, "--json"],
            cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
        )
    kill_guard.append(child)
    deadline = time.monotonic() + 60
    while changes.changed(A) == 0:
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the child never reached the fix"
        await asyncio.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    killed_at = time.monotonic()
    emulator.clear_faults()
    changes.after_apply.clear()
    async with Runtime(load_settings(env)) as rt:
        first = await run_pass(rt, fleet_desired(emulator))
        assert target_report(first, A).status == "locked"  # the dead pass still holds A's lease
        assert changes.changed(A) == 1
        story.passes.append(first)
        while True:  # poll for the lease to run out; it must within its 15 s
            report = await run_pass(rt, fleet_desired(emulator), only=A)
            if target_report(report, A).status != "locked":
                break
            assert time.monotonic() - killed_at < 15 + 5, "the dead pass's lease never expired"
            await asyncio.sleep(0.5)
        await healed(rt, story)
    assert changes.changed(A) == 1  # the fix the dead pass made was seen, not made again
    async with Ledger(azurite.connection_string, table_prefix=storage_prefix) as led:
        assert await led.open_drifts() == []


def test_the_cases_cover_every_stage_of_a_pass() -> None:
    stages = {op for op, _ in READ_CASES + AGENT_STATE_CASES} | {"agent.intent"} | {op for op, _ in VERIFY_CASES.values()}
    assert {"hub.get", "bgp.list", "routes.learned", "gateway.learned", "gateway.advertised", "firewall.get",
            "vnet.get", "routetable.get", "agent.state", "agent.intent"} <= stages
    assert len(READ_CASES + AGENT_STATE_CASES) + len(APPLY_CASES) + len(VERIFY_CASES) >= 50
