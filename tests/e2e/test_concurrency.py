"""Concurrency: timer, HTTP and queue-triggered passes (and separate workers) racing on the same targets.

60 invocations at once through the Functions app's own function objects (as the host calls them,
on one worker's event loop) plus independent `Runtime`s standing in for other workers, all over
the two-target fleet with both NVAs broken. One writer per target: each NVA is changed exactly
once, every pass either fixed, found nothing left to do or reported the target locked, and every
pass that may write left its record in the ledger.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

import function_app
from emulator import ArmEmulator
from localenv.azurite import Azurite
from localenv.host import functions
from reconciler.composition import Runtime, Worker
from reconciler.fanout import FanoutMessage
from reconciler.trigger import Trigger
from tests.e2e.harness import (
    A,
    B,
    Changes,
    break_next_hop,
    fleet_desired,
    nva_healthy,
    run_pass,
    set_agent_tokens,
    settings_env,
    settle,
)
from tests.e2e.invariants import all_agree, report_dicts_agree

pytestmark = pytest.mark.azurite

HTTP_BODIES = [b'{"target": "hub-weu"}', b'{"target": "hub-neu"}', b"{}", b'{"dry_run": true}']


@pytest.fixture
async def worker(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    doc = tmp_path / "fleet.json"
    doc.write_text(fleet_desired(emulator).model_dump_json())
    env = settings_env(emulator, azurite.connection_string, storage_prefix, ARS_DESIRED_STATE=str(doc),
                       ARS_VERIFY_TIMEOUT="5", ARS_TARGET_CONCURRENCY="64")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    set_agent_tokens(emulator, monkeypatch)
    w = Worker.from_environment(function_app.APP_ROOT)
    monkeypatch.setattr(function_app, "WORKER", w)
    monkeypatch.setattr(function_app, "SETTINGS", w.settings)
    yield w
    await w.aclose()
    await settle(emulator)


def http(body: bytes) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/reconcile", params={}, route_params={}, body=body)


def queued(target: str, n: int) -> func.QueueMessage:
    body = FanoutMessage(target, datetime.now(UTC)).to_json().encode()
    msg: func.QueueMessage = QueueMessage(id=f"m{n}", body=body, dequeue_count=1)  # type: ignore[no-untyped-call]
    return msg


async def test_sixty_racing_timer_http_queue_and_worker_passes_fix_each_target_exactly_once(
    worker: Worker, emulator: ArmEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = Changes().install(monkeypatch)
    fns = {name: f.get_user_function() for name, f in functions(function_app.app).items()}
    break_next_hop(emulator, A)
    break_next_hop(emulator, B)
    other_workers = [Runtime(worker.settings) for _ in range(10)]
    for rt in other_workers:
        await rt.__aenter__()
    state = worker.desired()
    calls: list[tuple[str, Any]] = []
    calls += [("http", fns["reconcile_http"](http(HTTP_BODIES[i % len(HTTP_BODIES)]))) for i in range(20)]
    calls += [("queue", fns["reconcile_queue"](queued((A, B)[i % 2], i))) for i in range(20)]
    calls += [("timer", fns["reconcile_timer"](TimerRequest(past_due=False))) for _ in range(10)]
    # Other processes' passes (an operator's `apply` elsewhere): their own trigger, told apart in the ledger.
    calls += [("worker", run_pass(rt, state, trigger=Trigger.CLI)) for rt in other_workers]
    assert len(calls) >= 50
    try:
        results = await asyncio.gather(*(c for _, c in calls), return_exceptions=True)
    finally:
        for rt in other_workers:
            await rt.__aexit__(None, None, None)
    failures = [(kind, r) for (kind, _), r in zip(calls, results, strict=True) if isinstance(r, BaseException)]
    assert failures == [], failures

    statuses: Counter[str] = Counter()
    for (kind, _), r in zip(calls, results, strict=True):
        if kind == "http":
            assert r.status_code in (200, 409), r.get_body()[:300]  # 409: a target was locked
            statuses.update(t["status"] for t in json.loads(r.get_body())["targets"])
        elif kind == "worker":
            statuses.update(t.status for t in r.targets)
    assert set(statuses) <= {"ok", "drift", "locked"}, statuses
    # One writer per target: each NVA was changed once, however many passes raced for it.
    assert changes.changed(A) == 1 and changes.changed(B) == 1, changes.applied
    assert nva_healthy(emulator, A) and nva_healthy(emulator, B)

    rt = await worker.runtime()
    assert rt.ledger is not None
    passes = await rt.ledger.passes(limit=500)
    by_trigger = Counter(p.trigger for p in passes)
    http_writes = sum(1 for i in range(20) if b"dry_run" not in HTTP_BODIES[i % len(HTTP_BODIES)])
    assert by_trigger == Counter({"http": http_writes, "queue": 20, "timer": 10, "cli": 10}), by_trigger
    assert sum(p.counts.get("fixed", 0) for p in passes) == 2  # exactly one fixing pass per target
    # The records say what the reports said: every locked target of an HTTP or worker pass is in the ledger.
    assert sum(p.counts.get("locked", 0) for p in passes if p.trigger in (Trigger.HTTP, Trigger.CLI)) == statuses["locked"]
    # The report, the ledger and the cards agree for every pass that raced.
    await all_agree(rt, [r for (kind, _), r in zip(calls, results, strict=True) if kind == "worker"])
    await report_dicts_agree(
        rt, [json.loads(r.get_body()) for (kind, _), r in zip(calls, results, strict=True) if kind == "http"]
    )
    final = await run_pass(rt, state)
    assert all(t.status == "ok" for t in final.targets) and await rt.ledger.open_drifts() == []
    await all_agree(rt, [final])
