"""The Functions app's functions, invoked as the host would (func.HttpRequest, TimerRequest,
QueueMessage), against the ARM emulator and Azurite; plus the local host serving them over HTTP."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as _QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

import function_app
from emulator import ArmEmulator
from localenv import scenarios
from localenv.host import LocalHost, functions, trigger
from localenv.webhook import WebhookReceiver
from reconciler import runs
from reconciler.composition import Worker
from reconciler.errors import TransientError
from reconciler.fanout import HostQueueRules, poison_queue

ROOT = Path(__file__).resolve().parents[2]


def queue_message(**kwargs: Any) -> func.QueueMessage:
    """The full queue message the host delivers (with dequeue_count); the SDK leaves it untyped."""
    msg: func.QueueMessage = _QueueMessage(**kwargs)  # type: ignore[no-untyped-call]
    return msg
TARGETS = ("hub-weu", "hub-weu-2")


@pytest.fixture
def desired_doc(desired_doc: dict[str, Any]) -> dict[str, Any]:
    """The reference lab as two targets on the same hub (a small fleet), agents on the emulator."""
    first = desired_doc["targets"][0]
    desired_doc["targets"] = [first, {**first, "name": TARGETS[1]}]
    return desired_doc


@pytest.fixture
async def live(worker: Worker) -> AsyncIterator[Worker]:
    """The worker, closed on this test's event loop afterwards."""
    yield worker
    await worker.aclose()


@pytest.fixture
def fanout(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARS_FANOUT", "true")


def http(method: str, path: str, *, body: bytes = b"", params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(method, f"http://localhost/api/{path}", params=params or {}, route_params={}, body=body)


def data(resp: func.HttpResponse) -> Any:
    assert resp.mimetype == "application/json"
    return json.loads(resp.get_body())


# ---- HTTP: reconcile --------------------------------------------------------------------------


async def test_post_reconcile_dry_run_returns_the_pass_report(live: Worker, fns: dict[str, Any]) -> None:
    resp = await fns["reconcile_http"](http("POST", "reconcile", body=b'{"dry_run": true, "target": "hub-weu"}'))
    assert resp.status_code == 200
    report = data(resp)
    assert report["dry_run"] is True and report["trigger"] == "http"
    assert [t["target"] for t in report["targets"]] == ["hub-weu"]
    assert report["targets"][0]["status"] == "ok"


async def test_post_reconcile_fixes_a_break_and_drift_endpoint_shows_the_ledger(
    live: Worker, fns: dict[str, Any], emulator: ArmEmulator
) -> None:
    scenarios.branch_to_branch_off(emulator)  # Azure-side writes are off: stays open
    resp = await fns["reconcile_http"](http("POST", "reconcile", params={"target": "hub-weu"}))
    assert resp.status_code == 200
    assert data(resp)["targets"][0]["status"] == "drift"

    drift = data(await fns["drift_http"](http("GET", "drift", params={"target": "hub-weu"})))
    assert "BRANCH_TO_BRANCH_DISABLED" in {d["code"] for d in drift["drifts"]}
    assert drift["count"] == len(drift["drifts"])
    critical = data(await fns["drift_http"](http("GET", "drift", params={"severity": "critical"})))
    assert {d["severity"] for d in critical["drifts"]} == {"critical"}
    info = data(await fns["drift_http"](http("GET", "drift", params={"severity": "info", "target": "hub-weu"})))
    assert info["drifts"] == []

    runs = data(await fns["runs_http"](http("GET", "runs", params={"limit": "5"})))
    assert runs["runs"][0]["trigger"] == "http" and runs["runs"][0]["targets"] == ["hub-weu"]


async def test_post_reconcile_on_a_locked_target_is_409_with_the_report(live: Worker, fns: dict[str, Any]) -> None:
    rt = await live.runtime()
    assert rt.services is not None and rt.services.leases is not None
    async with rt.services.leases.hold("hub-weu"):
        resp = await fns["reconcile_http"](http("POST", "reconcile", body=b'{"target": "hub-weu"}'))
    assert resp.status_code == 409
    assert data(resp)["targets"][0]["status"] == "locked"


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "status", "code"),
    [
        ("POST", "reconcile", b"{not json", {}, 400, "invalid_json"),
        ("POST", "reconcile", b"\xff\xfe", {}, 400, "invalid_json"),
        ("POST", "reconcile", b"[1, 2]", {}, 400, "invalid_body"),
        ("POST", "reconcile", b'{"dry_run": "yes"}', {}, 400, "invalid_field"),
        ("POST", "reconcile", b'{"target": 7}', {}, 400, "invalid_field"),
        ("POST", "reconcile", b'{"dryrun": true}', {}, 400, "unknown_body_field"),
        ("POST", "reconcile", b'{"target": "nope"}', {}, 404, "unknown_target"),
        ("POST", "reconcile", b"", {"dry_run": "maybe"}, 400, "invalid_query"),
        ("POST", "reconcile", b'{"dry_run": false}', {"dry_run": "true"}, 400, "conflicting_fields"),
        ("POST", "reconcile", b"", {"force": "1"}, 400, "unknown_query_field"),
        ("POST", "reconcile", b"x" * 20000, {}, 413, "body_too_large"),
        ("POST", "reconcile", b"[" * 10_000, {}, 400, "invalid_json"),  # not a RecursionError 500
        ("POST", "reconcile", b'{"target": ' * 1400, {}, 400, "invalid_json"),
        ("GET", "drift", b"", {"severity": "high"}, 400, "invalid_query"),
        ("GET", "drift", b"", {"target": "nope"}, 404, "unknown_target"),
        ("GET", "drift", b"", {"sort": "x"}, 400, "unknown_query_field"),
        ("GET", "runs", b"", {"limit": "0"}, 400, "invalid_query"),
        ("GET", "runs", b"", {"limit": "101"}, 400, "invalid_query"),
        ("GET", "runs", b"", {"limit": "-1"}, 400, "invalid_query"),
        ("GET", "runs", b"", {"limit": "ten"}, 400, "invalid_query"),
        ("GET", "health", b"", {"verbose": "1"}, 400, "unknown_query_field"),
    ],
)
async def test_bad_http_input_is_a_4xx_json_error(
    live: Worker,
    fns: dict[str, Any],
    method: str,
    path: str,
    body: bytes,
    params: dict[str, str],
    status: int,
    code: str,
) -> None:
    name = {"reconcile": "reconcile_http", "drift": "drift_http", "runs": "runs_http", "health": "health_http"}[path]
    resp = await fns[name](http(method, path, body=body, params=params))
    assert resp.status_code == status
    payload = data(resp)
    assert payload["error"]["code"] == code
    assert "Traceback" not in payload["error"]["message"]


async def test_function_key_in_the_query_is_not_an_unknown_field(live: Worker, fns: dict[str, Any]) -> None:
    resp = await fns["runs_http"](http("GET", "runs", params={"code": "a-function-key", "limit": "1"}))
    assert resp.status_code == 200


async def test_storage_outage_is_a_503_json_error_not_a_traceback(
    live: Worker, fns: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = await live.runtime()

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise TransientError("drift ledger: read open drift: storage unreachable")

    monkeypatch.setattr(rt.ledger, "open_drifts", down)
    resp = await fns["drift_http"](http("GET", "drift"))
    assert resp.status_code == 503
    assert data(resp)["error"]["code"] == "unavailable"


# ---- HTTP: passes longer than Azure lets a response wait ----------------------------------------


@pytest.fixture
async def no_wait(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    """A worker whose POST /api/reconcile waits 0 s: every pass is "longer than the bound"."""
    monkeypatch.setenv("ARS_HTTP_WAIT", "0")
    w = Worker.from_environment(function_app.APP_ROOT)
    monkeypatch.setattr(function_app, "WORKER", w)
    monkeypatch.setattr(function_app, "SETTINGS", w.settings)
    yield w
    await asyncio.gather(*function_app._RUNS, return_exceptions=True)
    await w.aclose()


async def poll_run(fns: dict[str, Any], pass_id: str, deadline_s: float = 60) -> func.HttpResponse:
    """GET /api/runs/{pass_id} until it is no longer 202 (or the deadline passes)."""
    end = asyncio.get_running_loop().time() + deadline_s
    while True:
        req = func.HttpRequest(
            "GET", f"http://localhost/api/runs/{pass_id}", params={}, route_params={"pass_id": pass_id}, body=b""
        )
        resp: func.HttpResponse = await fns["run_http"](req)
        if resp.status_code != 202 or asyncio.get_running_loop().time() > end:
            return resp
        await asyncio.sleep(0.1)


async def test_a_pass_longer_than_the_http_wait_is_202_with_location_and_goes_on(
    no_wait: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str
) -> None:
    resp = await fns["reconcile_http"](http("POST", "reconcile", body=b'{"target": "hub-weu"}'))
    assert resp.status_code == 202
    accepted = data(resp)
    pass_id = accepted["pass_id"]
    assert resp.headers["Location"] == accepted["status_url"] == f"/api/runs/{pass_id}"
    assert int(resp.headers["Retry-After"]) > 0 and accepted["status"] == "running"

    done = await poll_run(fns, pass_id)
    assert done.status_code == 200
    report = data(done)
    assert report["pass_id"] == pass_id and [t["target"] for t in report["targets"]] == ["hub-weu"]
    rt = await no_wait.runtime()
    (record,) = await rt.ledger.passes(limit=5)
    assert (record.pass_id, record.trigger, record.targets) == (pass_id, "http", ("hub-weu",))
    # The pass finished on this worker: its fallback message is gone, no second pass will run.
    raw = QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix)
    assert raw.get_queue_properties().approximate_message_count == 0
    assert (await poll_run(fns, "0123456789ab")).status_code == 404


async def test_an_http_run_whose_worker_went_away_is_finished_from_the_queue(
    no_wait: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fallback comes due after functionTimeout + visibilityTimeout: 5 s + 1 s here.
    monkeypatch.setattr(function_app, "QUEUE_RULES", HostQueueRules(5, timedelta(seconds=1), timedelta(seconds=5)))
    resp = await fns["reconcile_http"](http("POST", "reconcile", body=b'{"dry_run": true}'))
    assert resp.status_code == 202
    pass_id = data(resp)["pass_id"]
    for task in list(function_app._RUNS):  # the worker is scaled in mid-pass: its task dies with it
        task.cancel()
    await asyncio.gather(*function_app._RUNS, return_exceptions=True)
    assert (await poll_run(fns, pass_id, deadline_s=0)).status_code == 202  # still running, as far as anyone knows

    q = _queue(env["ARS_STORAGE_CONNECTION"], storage_prefix)
    end = asyncio.get_running_loop().time() + 30
    got: list[Any] = []
    while not got and asyncio.get_running_loop().time() < end:
        got = list(q.receive_messages(messages_per_page=4, visibility_timeout=30))
        if not got:
            await asyncio.sleep(0.2)
    (m,) = got
    assert json.loads(m.content)["run"] == pass_id
    await fns["reconcile_queue"](queue_message(id=m.id, body=m.content.encode(), dequeue_count=1))
    q.delete_message(m)

    done = await poll_run(fns, pass_id, deadline_s=0)
    assert done.status_code == 200
    report = data(done)
    assert report["pass_id"] == pass_id and report["dry_run"] is True and report["trigger"] == "http"
    assert {t["target"] for t in report["targets"]} == set(TARGETS)


async def test_an_http_run_whose_fallback_is_poisoned_answers_an_error_not_202_forever(
    no_wait: Worker, fns: dict[str, Any]
) -> None:
    resp = await fns["reconcile_http"](http("POST", "reconcile", body=b'{"dry_run": true}'))
    pass_id = data(resp)["pass_id"]
    for task in list(function_app._RUNS):  # the worker went away mid-pass
        task.cancel()
    await asyncio.gather(*function_app._RUNS, return_exceptions=True)
    body = json.dumps({"v": 1, "target": None, "tick": "2026-11-25T08:00:00+00:00", "origin": "http",
                       "run": pass_id, "dry_run": True}).encode()  # fmt: skip
    await fns["reconcile_poison"](queue_message(id="p1", body=body, dequeue_count=1))
    done = await poll_run(fns, pass_id, deadline_s=0)
    assert done.status_code == 500
    assert data(done)["error"]["code"] == "run_failed" and "failed 5 time(s)" in data(done)["error"]["message"]


async def test_the_daily_retention_timer_purges_old_http_run_records(
    live: Worker, fns: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    resp = await fns["reconcile_http"](http("POST", "reconcile", body=b'{"dry_run": true, "target": "hub-weu"}'))
    assert resp.status_code == 200
    pass_id = data(resp)["pass_id"]
    assert (await poll_run(fns, pass_id, deadline_s=0)).status_code == 200  # its run record exists
    await fns["retention_timer"](TimerRequest(past_due=False))
    assert (await poll_run(fns, pass_id, deadline_s=0)).status_code == 200  # a week is kept
    monkeypatch.setattr(runs, "RUN_KEEP", timedelta(seconds=-5))  # "a week later"
    await fns["retention_timer"](TimerRequest(past_due=False))
    assert (await poll_run(fns, pass_id, deadline_s=0)).status_code == 404


# ---- HTTP: health -----------------------------------------------------------------------------


async def test_health_is_stale_before_any_pass_and_ok_after_one(live: Worker, fns: dict[str, Any]) -> None:
    before = await fns["health_details_http"](http("GET", "health/details"))
    assert before.status_code == 503
    assert data(before)["stale_targets"] == list(TARGETS)
    assert (await fns["health_http"](http("GET", "health"))).status_code == 503

    await fns["reconcile_timer"](TimerRequest(past_due=False))
    after = await fns["health_details_http"](http("GET", "health/details"))
    body = data(after)
    assert after.status_code == 200, body
    assert body["status"] == "ok" and body["interval_s"] == 300.0
    assert {r["target"]: r["trigger"] for r in body["targets"]} == {t: "timer" for t in TARGETS}
    assert all(r["age_s"] is not None and r["age_s"] < 60 for r in body["targets"])
    assert "token" not in json.dumps(body).lower()
    summary = await fns["health_http"](http("GET", "health"))
    assert summary.status_code == 200
    assert data(summary)["status"] == "ok" and data(summary)["max_age_s"] < 60


async def test_anonymous_health_says_status_and_staleness_only(
    live: Worker, fns: dict[str, Any], env: dict[str, str]
) -> None:
    await fns["reconcile_http"](http("POST", "reconcile", params={"target": TARGETS[0]}))
    resp = await fns["health_http"](http("GET", "health"))
    body = data(resp)
    assert resp.status_code == 503 and set(body) == {"status", "checked_at", "stale_after_s", "max_age_s"}
    assert body["status"] == "stale" and body["max_age_s"] is None  # hub-weu-2 never passed
    rt = await live.runtime()
    (p,) = await rt.ledger.passes(limit=5)
    text = resp.get_body().decode()
    for secret in (*TARGETS, p.pass_id, "http", env["ARS_DESIRED_STATE"], "127.0.0.1", "schedule"):
        assert secret not in text


async def test_anonymous_health_hides_why_it_cannot_answer(
    live: Worker, fns: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = await live.runtime()

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise TransientError("drift ledger: read passes: cannot reach 127.0.0.1:10002")

    real = rt.ledger.passes
    monkeypatch.setattr(rt.ledger, "passes", down)
    resp = await fns["health_http"](http("GET", "health"))
    assert resp.status_code == 503 and data(resp)["error"]["code"] == "unavailable"
    assert "127.0.0.1" not in resp.get_body().decode()
    details = await fns["health_details_http"](http("GET", "health/details"))
    assert "127.0.0.1" in data(details)["error"]["message"]  # behind the key, the reason is given
    monkeypatch.setattr(rt.ledger, "passes", real)

    Path(env["ARS_DESIRED_STATE"]).write_text("{not: valid")  # the document broke after start
    resp = await fns["health_http"](http("GET", "health"))
    assert resp.status_code == 503 and data(resp)["error"]["code"] == "unavailable"
    assert Path(env["ARS_DESIRED_STATE"]).name not in resp.get_body().decode()


async def test_a_dry_run_does_not_count_as_a_successful_pass(live: Worker, fns: dict[str, Any]) -> None:
    await fns["reconcile_http"](http("POST", "reconcile", body=b'{"dry_run": true}'))
    assert (await fns["health_http"](http("GET", "health"))).status_code == 503


# ---- timer, fan-out, poison -------------------------------------------------------------------


def _queue(conn: str, name: str) -> QueueClient:
    return QueueClient.from_connection_string(conn, name, message_decode_policy=TextBase64DecodePolicy())


async def test_timer_without_fanout_reconciles_every_target(live: Worker, fns: dict[str, Any]) -> None:
    await fns["reconcile_timer"](TimerRequest(past_due=True))
    rt = await live.runtime()
    passes = await rt.ledger.passes(limit=5)
    assert [(p.trigger, p.targets) for p in passes] == [("timer", TARGETS)]


async def test_fanout_end_to_end_timer_queue_worker_ledger(
    fanout: None, live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str
) -> None:
    await fns["reconcile_timer"](TimerRequest(past_due=False))

    # What the host would see: base64 bodies on the queue, one per target.
    raw = QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix)
    peeked = raw.peek_messages(max_messages=32)
    assert len(peeked) == 2
    assert {json.loads(base64.b64decode(m.content))["target"] for m in peeked} == set(TARGETS)

    q = _queue(env["ARS_STORAGE_CONNECTION"], storage_prefix)
    delivered = 0
    for m in q.receive_messages(messages_per_page=32, visibility_timeout=30):
        msg = queue_message(id=m.id, body=m.content.encode(), dequeue_count=m.dequeue_count, pop_receipt=m.pop_receipt)
        await fns["reconcile_queue"](msg)
        q.delete_message(m)
        delivered += 1
    assert delivered == 2

    rt = await live.runtime()
    passes = await rt.ledger.passes(limit=10)
    assert sorted((p.trigger, p.targets) for p in passes) == [("queue", (t,)) for t in TARGETS]
    health = data(await fns["health_details_http"](http("GET", "health/details")))
    assert health["status"] == "ok" and health["fanout"] is True


async def test_fanout_messages_live_through_every_retry_of_the_host(
    fanout: None, live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str
) -> None:
    await fns["reconcile_timer"](TimerRequest(past_due=False))
    raw = QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix)
    peeked = raw.peek_messages(max_messages=32)
    assert len(peeked) == 2
    rules = function_app.QUEUE_RULES
    for m in peeked:
        assert m.expires_on is not None and m.inserted_on is not None
        lives = m.expires_on - m.inserted_on
        # 5 tries x (function timeout + visibility timeout), not one 300 s tick.
        assert lives >= rules.max_dequeue_count * (rules.function_timeout + rules.visibility_timeout)


async def test_a_queue_pass_logs_a_few_records_not_the_sdks_requests(
    live: Worker, fns: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the real Python worker forwards INFO and up to the host
    body = b'{"v":1,"target":"hub-weu","tick":"2026-11-25T08:00:00+00:00"}'
    await fns["reconcile_queue"](queue_message(id="m", body=body, dequeue_count=1))
    names = [r.name for r in caplog.records]
    assert [n for n in names if n.startswith("azure")] == [], names
    assert 1 <= len(names) <= 8, names


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"v": 1, "target": "gone", "tick": "2026-01-01T00:00:00+00:00"}', b'{"v": 2}', b"\xff"],
)
async def test_a_message_that_can_never_succeed_is_recorded_as_poison_at_once(
    live: Worker, fns: dict[str, Any], body: bytes
) -> None:
    await fns["reconcile_queue"](queue_message(id="m1", body=body, dequeue_count=1))  # does not raise
    rt = await live.runtime()
    history = await rt.ledger.history(limit=5)
    assert [h["kind"] for h in history] == ["poison"]
    assert await rt.ledger.passes(limit=5) == []


async def test_poison_queue_function_records_the_message_in_the_ledger(
    live: Worker, fns: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"v":1,"target":"hub-weu","tick":"2026-11-25T08:00:00+00:00","origin":"timer"}'
    # The first delivery on the poison queue has dequeue count 1: the tries were the host's five.
    await fns["reconcile_poison"](queue_message(id="p1", body=body, dequeue_count=1))
    rt = await live.runtime()
    (event,) = await rt.ledger.history(limit=5)
    assert event["kind"] == "poison" and json.loads(str(event["message"]))["target"] == "hub-weu"
    assert "failed 5 time(s)" in str(event["detail"])
    assert any(r.levelname == "ERROR" and "failed 5 time(s)" in r.getMessage() for r in caplog.records)


async def test_a_poisoned_target_is_alerted_blind_at_once_not_after_a_hold_down(
    env: dict[str, str], webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, fns: dict[str, Any]
) -> None:
    monkeypatch.setenv("ARS_TEAMS_WEBHOOK_URL", webhook.url)  # production alert rules: no hold-down override
    monkeypatch.delenv("ARS_ALERT_HOLD_DOWN", raising=False)
    w = Worker.from_environment(function_app.APP_ROOT)
    monkeypatch.setattr(function_app, "WORKER", w)
    try:
        body = b'{"v":1,"target":"hub-weu","tick":"2026-11-25T08:00:00+00:00","origin":"timer"}'
        await fns["reconcile_poison"](queue_message(id="p1", body=body, dequeue_count=1))
    finally:
        await w.aclose()
    cards = [r.body.decode() for r in webhook.accepted()]
    assert len(cards) == 1 and "RECONCILER BLIND" in cards[0].upper() and "failed 5 time" in cards[0]  # (s) escaped


async def test_a_failing_target_raises_so_the_host_retries_it(
    live: Worker, fns: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = await live.runtime()
    assert rt.services is not None
    monkeypatch.setattr(rt.services, "leases", _DownLeases())
    body = b'{"v":1,"target":"hub-weu","tick":"2026-11-25T08:00:00+00:00"}'
    with pytest.raises(TransientError, match="hub-weu"):
        await fns["reconcile_queue"](queue_message(id="m", body=body, dequeue_count=1))


class _DownLeases:
    """A lease store whose storage is unreachable (a fake of the LeasesPort)."""

    def hold(self, target: str) -> Any:
        raise TransientError(f"target lease: acquire lease for {target!r}: storage unreachable")


# ---- the local host: same function objects over real HTTP -------------------------------------


@pytest.fixture
def host(worker: Worker, env: dict[str, str]) -> Iterator[LocalHost]:
    bound = trigger(functions(function_app.app)["reconcile_queue"])["queueName"]
    with LocalHost(
        function_app.app,
        storage_connection=env["ARS_STORAGE_CONNECTION"],
        key="k1",
        on_close=worker.aclose,
        queue_names={bound: worker.settings.fanout_queue, poison_queue(bound): poison_queue(worker.settings.fanout_queue)},
    ) as h:
        yield h


def _call(url: str, method: str = "GET", body: bytes | None = None, key: str | None = "k1") -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method)
    if key:
        req.add_header("x-functions-key", key)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def test_local_host_serves_reconcile_and_drift_over_http(host: LocalHost, emulator: ArmEmulator) -> None:
    scenarios.branch_to_branch_off(emulator)
    status, report = _call(f"{host.url}/api/reconcile", "POST", b'{"target": "hub-weu"}')
    assert status == 200 and report["targets"][0]["status"] == "drift"
    status, drift = _call(f"{host.url}/api/drift?severity=critical")
    assert status == 200 and "BRANCH_TO_BRANCH_DISABLED" in {d["code"] for d in drift["drifts"]}
    # The host routes by method: a wrong method matches no route, so 404 (never 405), and the
    # function does not run (no pass is recorded for the GET).
    runs_before = len(_call(f"{host.url}/api/runs")[1]["runs"])
    for method, path in (("GET", "reconcile"), ("PUT", "reconcile"), ("DELETE", "drift"), ("POST", "runs"),
                         ("POST", "health")):
        assert _call(f"{host.url}/api/{path}", method) == (404, None), (method, path)  # the host's empty 404
    assert len(_call(f"{host.url}/api/runs")[1]["runs"]) == runs_before
    assert _call(f"{host.url}/api/drift", key=None)[0] == 401  # FUNCTION level needs the key
    assert _call(f"{host.url}/api/drift", key="wrong")[0] == 401
    assert _call(f"{host.url}/api/health/details", key=None)[0] == 401
    status, health = _call(f"{host.url}/api/health", key=None)  # ANONYMOUS: no key needed
    assert (status, health["status"], health["max_age_s"]) == (503, "stale", None)  # hub-weu-2 never passed
    status, details = _call(f"{host.url}/api/health/details")
    assert (status, details["stale_targets"]) == (503, [TARGETS[1]])  # only hub-weu has passed
    assert _call(f"{host.url}/api/nothing")[0] == 404


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """host.json's 30 s between retries, shortened the way an app setting overrides it on the host."""
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "00:00:01")


def test_local_host_answers_a_long_pass_with_202_and_location_then_the_report(
    no_wait: Worker, env: dict[str, str]
) -> None:
    with LocalHost(function_app.app, storage_connection=env["ARS_STORAGE_CONNECTION"], key="k1") as h:
        req = urllib.request.Request(f"{h.url}/api/reconcile", data=b'{"dry_run": true}', method="POST")
        req.add_header("x-functions-key", "k1")
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 202
            location = resp.headers["Location"]
            assert location.startswith("/api/runs/") and resp.headers["Retry-After"]
        end = time.monotonic() + 60
        status, body = _call(h.url + location)
        while status == 202 and time.monotonic() < end:
            time.sleep(0.2)
            status, body = _call(h.url + location)
        assert status == 200 and body["pass_id"] == location.rsplit("/", 1)[1] and body["dry_run"] is True
        assert _call(h.url + location, key=None)[0] == 401  # the report needs the function key
        h.run(asyncio.gather(*function_app._RUNS, return_exceptions=True))
        h.run(no_wait.aclose())  # its clients live on the host's loop


def test_local_host_fanout_moves_a_failing_message_to_poison_after_max_dequeue(
    fanout: None, quick_retries: None, host: LocalHost, env: dict[str, str], storage_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, _ = _call(f"{host.url}/admin/functions/reconcile_timer", "POST", b"{}")
    assert status == 202
    rt = host.run(function_app.WORKER.runtime())
    assert rt.services is not None
    # hub-weu-2's storage is "down" for every delivery: retried, then poisoned, then recorded.
    real = rt.services.leases

    class Flaky:
        def hold(self, target: str) -> Any:
            return _DownLeases().hold(target) if target == TARGETS[1] else real.hold(target)

    monkeypatch.setattr(rt.services, "leases", Flaky())
    host.drain(deadline_s=60)
    passes = host.run(rt.ledger.passes(limit=20))
    ok = [p for p in passes if not p.errors]
    assert [p.targets for p in ok] == [(TARGETS[0],)]
    failed = sorted((p for p in passes if p.errors), key=lambda p: p.started_at)
    assert len(failed) == host.max_dequeue  # one pass per delivery attempt
    # Like the host, the shim puts a failed message back for visibilityTimeout before the next try.
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(failed)]
    assert host.rules.visibility_timeout.total_seconds() == 1.0
    assert all(g >= 0.9 for g in gaps), gaps
    kinds = [h["kind"] for h in host.run(rt.ledger.history(limit=50)) if h["kind"] == "poison"]
    assert kinds == ["poison"]


# ---- start-up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "extra"),
    [
        ("ARS_TIMER_SCHEDULE", "*/5 * * * *", {}),
        ("ARS_ARM_CONCURRENCY", "0", {}),
        ("ARS_FANOUT", "maybe", {}),
        ("ARS_DESIRED_STATE", "/nonexistent/desired.yaml", {}),
        ("ARS_STORAGE_CONNECTION", None, {"ARS_FANOUT": "true"}),
    ],
)
def test_start_with_a_missing_or_malformed_setting_fails_with_one_line_naming_it(
    setting: str, value: str | None, extra: dict[str, str]
) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **extra}
    if value is not None:
        env[setting] = value
    proc = subprocess.run(
        [sys.executable, "-m", "localenv.host", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: setting {setting}"), lines[0]


def test_importing_the_app_with_a_bad_setting_raises_one_line_naming_it() -> None:
    code = "import function_app"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ARS_LEASE_SECONDS": "5"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "reconciler.errors.ConfigurationError: setting ARS_LEASE_SECONDS:"
    )



def test_app_insights_is_imported_only_when_its_connection_string_is_set() -> None:
    code = "import sys, function_app; print('azure.monitor.opentelemetry' in sys.modules)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "APPLICATIONINSIGHTS_CONNECTION_STRING": ""}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
    # And the distro itself imports cleanly with warnings as errors (it is pinned for deployment).
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "from azure.monitor.opentelemetry import configure_azure_monitor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
