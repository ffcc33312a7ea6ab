"""Event-driven passes through the real function objects: Microsoft's published Event Grid samples
(both schemas) in, targeted passes on the fan-out queue out; what must never start a pass; the
200-event storm; and end to end over the local host's Event Grid webhook with the emulator
publishing, down to "changed by" in the ledger, the HTTP API, `status` and the Teams card."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.storage.queue import QueueClient

import function_app
from emulator import ArmEmulator
from emulator.events import ALICE, RECONCILER, EventPublisher
from localenv import scenarios
from localenv.demo_events import app_host
from localenv.host import LocalHost
from localenv.webhook import WebhookReceiver
from reconciler import cli
from reconciler.composition import Worker
from reconciler.event_intake import EventIntake
from reconciler.events import Verdict
from reconciler.fanout import parse_message
from tests.fixtures.eventgrid import published, sample

NET = "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network"
HUB = f"{NET}/virtualHubs/ars-hub"
CONN = f"{HUB}/bgpConnections/nva1"
FW = f"{NET}/azureFirewalls/fw-hub"
GW = f"{NET}/virtualNetworkGateways/ergw"
SUBNET = f"{NET}/virtualNetworks/hub-vnet/subnets/AzureFirewallSubnet"
RT = f"{NET}/routeTables/rt-fw"
OTHER_HUB = "/subscriptions/sub-1/resourceGroups/rg-neu/providers/Microsoft.Network/virtualHubs/ars-neu"


@pytest.fixture
def desired_doc(desired_doc: dict[str, Any]) -> dict[str, Any]:
    """The reference lab (agents on the emulator) plus a second target on another hub."""
    first = desired_doc["targets"][0]
    second = {**first, "name": "hub-neu", "resource_group": "rg-neu", "route_server": "ars-neu", "subnets": []}
    desired_doc["targets"] = [first, second]
    return desired_doc


@pytest.fixture
def extra_env() -> dict[str, str]:
    return {
        "ARS_EVENT_SETTLE": "0",  # messages visible at once, so the tests can read them
        "ARS_EVENT_MIN_INTERVAL": "0",
        "ARS_EVENT_OWN_IDS": RECONCILER.app_id,
    }


@pytest.fixture
def worker(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Worker:
    monkeypatch.setattr(function_app, "EVENTS", EventIntake(worker.settings))
    return worker


@pytest.fixture
async def live(worker: Worker) -> AsyncIterator[Worker]:
    yield worker
    await function_app.EVENTS.aclose()
    await worker.aclose()


def decoded(event: dict[str, Any]) -> func.EventGridEvent:
    """The event as the Python worker hands it to the function (the SDK's own converter)."""
    value: func.EventGridEvent = EventGridEventInConverter.decode(
        meta.Datum(json.dumps(event), "json"), trigger_metadata={}
    )
    return value


def queued(env: dict[str, str], prefix: str) -> list[tuple[str, str]]:
    raw = QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], prefix)
    try:
        msgs = raw.peek_messages(max_messages=32)
    except Exception:
        return []
    out = []
    for m in msgs:
        msg = parse_message(base64.b64decode(m.content))
        out.append((msg.target, msg.origin))
    return sorted(out)


# ---- each watched resource type starts exactly its targeted pass -------------------------------


@pytest.mark.parametrize(
    ("name", "resource"),
    [
        ("write-success.eventgrid", HUB),
        ("delete-success.eventgrid", CONN),
        ("write-success.eventgrid", CONN),
        ("write-success.eventgrid", FW),
        ("action-success.eventgrid", GW),
        ("write-success.eventgrid", SUBNET),
        ("delete-success.eventgrid", f"{RT}/routes/default-internet"),
        ("delete-success.cloudevents", CONN),
    ],
)
async def test_an_event_for_each_watched_resource_queues_exactly_its_targeted_pass(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str, name: str, resource: str
) -> None:
    await fns["reconcile_event"](decoded(sample(name, resource)))
    assert queued(env, storage_prefix) == [("hub-weu", "event")]
    assert function_app.EVENTS.counts == {Verdict.ACCEPTED: 1}


async def test_an_event_on_the_other_hub_queues_only_that_target(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str
) -> None:
    await fns["reconcile_event"](decoded(sample("delete-success.eventgrid", f"{OTHER_HUB}/bgpConnections/nva1")))
    assert queued(env, storage_prefix) == [("hub-neu", "event")]


# ---- what must never start a pass ---------------------------------------------------------------


def _forged() -> dict[str, Any]:
    ev = sample("write-success.eventgrid", HUB)
    ev["topic"] = "/subscriptions/sub-attacker"
    return ev


def _failure() -> dict[str, Any]:
    return {**sample("write-success.eventgrid", HUB), "eventType": "Microsoft.Resources.ResourceWriteFailure"}


def _self() -> dict[str, Any]:
    return sample("action-success.eventgrid", CONN, app_id=RECONCILER.app_id, object_id=RECONCILER.object_id)


@pytest.mark.parametrize(
    ("make", "verdict"),
    [
        (lambda: sample("write-success.eventgrid", f"{NET}/virtualNetworks/spoke/subnets/app"), Verdict.UNRELATED),
        (lambda: published("write-success.eventgrid"), Verdict.FORGED),  # the sample as published: {placeholders}
        (lambda: {**sample("write-success.eventgrid", HUB), "data": None}, Verdict.MALFORMED),
        (lambda: {**sample("write-success.eventgrid", HUB), "eventTime": None}, Verdict.MALFORMED),
        (_forged, Verdict.FORGED),
        (lambda: sample("write-success.eventgrid", HUB, at=datetime.now(UTC) - timedelta(hours=2)), Verdict.STALE),
        (_self, Verdict.SELF),
        (_failure, Verdict.UNRELATED),
        (lambda: published("subscription-validation.eventgrid"), Verdict.UNRELATED),
    ],
)
async def test_events_that_must_not_start_a_pass_queue_nothing_and_are_counted(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str, make: Any, verdict: Verdict
) -> None:
    await fns["reconcile_event"](decoded(make()))  # never raises: Event Grid must not retry these
    assert queued(env, storage_prefix) == []
    assert function_app.EVENTS.counts == {verdict: 1}


async def test_a_replayed_event_is_rejected_after_its_first_delivery(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str
) -> None:
    ev = sample("delete-success.eventgrid", CONN)
    await fns["reconcile_event"](decoded(ev))
    rt = await live.runtime()
    await function_app.reconcile_queue(_take(env, storage_prefix)[0])  # the pass ran; a new one may queue
    await fns["reconcile_event"](decoded(ev))
    assert queued(env, storage_prefix) == []
    assert function_app.EVENTS.counts == {Verdict.ACCEPTED: 1, Verdict.REPLAYED: 1}
    assert [p.trigger for p in await rt.ledger.passes(limit=5)] == ["event"]


def _take(env: dict[str, str], prefix: str) -> list[func.QueueMessage]:
    from azure.functions.queue import QueueMessage
    from azure.storage.queue import TextBase64DecodePolicy

    q = QueueClient.from_connection_string(
        env["ARS_STORAGE_CONNECTION"], prefix, message_decode_policy=TextBase64DecodePolicy()
    )
    out = []
    for m in q.receive_messages(messages_per_page=32, visibility_timeout=60):
        out.append(QueueMessage(id=m.id, body=m.content.encode(), dequeue_count=m.dequeue_count))  # type: ignore[no-untyped-call]
        q.delete_message(m)
    return out


# ---- the storm ----------------------------------------------------------------------------------


async def test_a_storm_of_200_events_for_one_target_runs_at_most_two_passes_and_keeps_who(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str, emulator: ArmEmulator
) -> None:
    scenarios.branch_to_branch_off(emulator)
    storm = [sample("write-success.eventgrid", HUB, upn=f"user{i}@contoso.example") for i in range(200)]
    await asyncio.gather(*(fns["reconcile_event"](decoded(e)) for e in storm))
    assert function_app.EVENTS.counts == {Verdict.ACCEPTED: 200}
    passes = 0
    while msgs := _take(env, storage_prefix):
        for m in msgs:
            await fns["reconcile_queue"](m)
            passes += 1
    assert 1 <= passes <= 2
    rt = await live.runtime()
    records = await rt.ledger.passes(limit=10)
    assert [p.trigger for p in records] == ["event"] * passes
    drift = {d.code: d for d in await rt.ledger.open_drifts(target="hub-weu")}
    who = drift["BRANCH_TO_BRANCH_DISABLED"].changed_by
    assert who is not None and who.who.startswith("user") and who.operation == "Microsoft.Network/virtualHubs/write"


# ---- end to end: emulator -> Event Grid webhook on the local host -> queue -> pass -> ledger ------


@pytest.fixture
def host(worker: Worker, env: dict[str, str], webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[
    LocalHost
]:
    monkeypatch.setenv("ARS_TEAMS_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("ARS_ALERT_HOLD_DOWN", "0")
    with app_host(env["ARS_STORAGE_CONNECTION"], key="k1") as (h, _):
        yield h


def test_the_app_host_puts_the_app_modules_state_back(env: dict[str, str], storage_prefix: str) -> None:
    """A run on the local host points function_app at its own settings (its own queue names) and
    must put them back: a later test reading function_app.SETTINGS once saw a previous run's queue
    while the binding still named the deployed one (CI, after the real-FRR report tests)."""
    before = (function_app.WORKER, function_app.SETTINGS, function_app.EVENTS)
    with app_host(env["ARS_STORAGE_CONNECTION"], key="k1") as (_, fa):
        assert fa is function_app
        assert function_app.SETTINGS.fanout_queue == env["ARS_FANOUT_QUEUE"] != before[1].fanout_queue
    assert before == (function_app.WORKER, function_app.SETTINGS, function_app.EVENTS)


def _post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def test_the_webhook_answers_the_validation_handshakes_like_the_host(host: LocalHost) -> None:
    url = f"{host.url}/runtime/webhooks/eventgrid?functionName=reconcile_event&code=k1"
    validation = json.dumps(published("subscription-validation.eventgrid")).encode()
    status, body, _ = _post(url, validation, {"aeg-event-type": "SubscriptionValidation"})
    assert status == 200 and json.loads(body) == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    status, _, head = _post(url, b"", {"WebHook-Request-Origin": "eventgrid.azure.net"}, method="OPTIONS")
    assert status == 200 and head["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert _post(url.replace("code=k1", "code=no"), validation, {"aeg-event-type": "SubscriptionValidation"})[0] == 401
    assert _post(url.replace("reconcile_event", "reconcile_http"), b"[]", {"aeg-event-type": "Notification"})[0] == 404


def test_emulated_change_is_repaired_by_an_event_pass_with_who_in_ledger_api_status_and_card(
    host: LocalHost, emulator: ArmEmulator, env: dict[str, str], webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = EventPublisher(f"{host.url}/runtime/webhooks/eventgrid?functionName=reconcile_event&code=k1")
    emulator.events = pub
    try:
        scenarios.branch_to_branch_off(emulator)
        pub.publish(HUB, "write", operation="Microsoft.Network/virtualHubs/write", caller=ALICE)
        assert pub.wait_idle(10) and len(pub.delivered) == 1
        deadline = time.monotonic() + 60
        rt = host.run(function_app.WORKER.runtime())
        found = None
        while time.monotonic() < deadline:
            host.drain(deadline_s=30)
            drift = {d.code: d for d in host.run(rt.ledger.open_drifts(target="hub-weu"))}
            found = drift.get("BRANCH_TO_BRANCH_DISABLED")
            if found is not None:
                break
        assert found is not None and found.changed_by is not None
        assert found.changed_by.who == "alice@contoso.example"
        # The pass's own ARM calls (route queries are POSTs) raised events too: all screened out as self.
        assert pub.wait_idle(10)
        host.drain(deadline_s=30)
        assert function_app.EVENTS.counts[Verdict.SELF] >= 1
        assert function_app.EVENTS.counts[Verdict.ACCEPTED] == 1
        assert [p.trigger for p in host.run(rt.ledger.passes(limit=10))] == ["event"]

        # HTTP API
        req = urllib.request.Request(f"{host.url}/api/drift?target=hub-weu", headers={"x-functions-key": "k1"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            api = json.loads(resp.read())
        by_code = {d["code"]: d for d in api["drifts"]}
        assert by_code["BRANCH_TO_BRANCH_DISABLED"]["changed_by"]["who"] == "alice@contoso.example"
        # status
        out = io.StringIO()
        assert cli.main(["status", "--target", "hub-weu"], out=out) == 2
        assert "alice@contoso.example: virtualHubs/write" in out.getvalue()
        # status --json answers the HTTP API's JSON for the same drift ("changed by" as one line)
        out = io.StringIO()
        assert cli.main(["status", "--target", "hub-weu", "--json"], out=out) == 2
        for row in json.loads(out.getvalue())["open_drift"]:
            same = next(d for d in api["drifts"] if d["identity"] == row["identity"])
            assert {**row, "changed_by": same["changed_by"]} == same
        # the Teams card
        cards = json.dumps([r.json() for r in webhook.accepted()])
        assert "Changed by" in cards and "alice@contoso.example" in cards
    finally:
        emulator.events = None
        pub.close()


# ---- NVA side: the (emulated) agent reports FRR changes, signed -------------------------------


def test_an_agent_change_report_starts_a_pass_that_fixes_the_nva_and_says_who(
    host: LocalHost, emulator: ArmEmulator
) -> None:
    from emulator.agent_reports import AgentReporter

    reporter = AgentReporter(emulator, f"{host.url}/api/agent/changes?code=k1", period_s=0.1)
    try:
        scenarios.next_hop_not_set(emulator)  # an edit on the NVA, not by the agent
        rt = host.run(function_app.WORKER.runtime())
        deadline = time.monotonic() + 60
        history: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            host.drain(deadline_s=30)
            history = host.run(rt.ledger.history(target="hub-weu", limit=20))
            if any(h["kind"] == "resolved" for h in history):
                break
            time.sleep(0.1)
        opened = [h for h in history if h["kind"] == "opened" and h["code"] == "ROUTE_NEXT_HOP_WRONG"]
        assert opened and "outside the agent" in opened[0]["changed_by"]
        assert any(h["kind"] == "resolved" and h["code"] == "ROUTE_NEXT_HOP_WRONG" for h in history)
        # The fix the agent applied is reported too, as the agent's own change: it starts nothing.
        end = time.monotonic() + 10
        while function_app.EVENTS.counts[Verdict.SELF] == 0 and time.monotonic() < end:
            time.sleep(0.1)
        assert function_app.EVENTS.counts[Verdict.SELF] >= 1
        host.drain(deadline_s=30)
        # Both targets peer with that NVA (the second copies the first's peers): one pass each.
        passes = host.run(rt.ledger.passes(limit=10))
        assert sorted((p.trigger, p.targets) for p in passes) == [("event", ("hub-neu",)), ("event", ("hub-weu",))]
    finally:
        reporter.close()


def test_forged_and_replayed_agent_reports_are_refused(host: LocalHost, emulator: ArmEmulator) -> None:
    from reconciler.change_report import report_key, sign

    body = json.dumps({"v": 1, "nva_ip": scenarios.NVA_IP, "kind": "config", "at": datetime.now(UTC).isoformat(),
                       "by": "outside-agent", "summary": "x", "old_hash": "", "new_hash": ""}).encode()  # fmt: skip
    url = f"{host.url}/api/agent/changes?code=k1"
    ts, nonce = int(time.time()), "ab" * 16
    good = sign(report_key(emulator.world.nva(scenarios.NVA_IP).agent_token), ts, nonce, body)
    forged = sign(report_key("guessed-token"), ts, nonce, body)
    head = {"x-ars-timestamp": str(ts), "x-ars-nonce": nonce}
    assert _post(url, body, {**head, "x-ars-signature": forged})[0] == 401
    assert _post(url, body, {**head, "x-ars-signature": good})[0] == 202
    assert _post(url, body, {**head, "x-ars-signature": good})[0] == 409  # same nonce again
    status, answer, _ = _post(url, b"{", {**head, "x-ars-signature": good})
    assert status == 400 and json.loads(answer) == {"verdict": "malformed"}
    assert _post(url.replace("code=k1", "code=no"), body, {**head, "x-ars-signature": good})[0] == 401


# ---- the timer's fallback: the Activity Log says who, when the event was lost ------------------


async def test_drift_the_timer_finds_is_attributed_from_the_activity_log(
    live: Worker, fns: dict[str, Any], emulator: ArmEmulator
) -> None:
    from azure.functions.timer import TimerRequest

    pub = EventPublisher(None)  # Event Grid loses every delivery; the Activity Log keeps the writes
    emulator.events = pub
    try:
        scenarios.branch_to_branch_off(emulator)
        pub.publish(HUB, "write", operation="Microsoft.Network/virtualHubs/write", caller=ALICE)
        # The reconciler's own later write on the hub is in the Activity Log too, and must not win.
        pub.publish(HUB, "action", operation="Microsoft.Network/virtualHubs/bgpConnections/learnedRoutes/action",
                    caller=RECONCILER)  # fmt: skip
        await fns["reconcile_timer"](TimerRequest(past_due=False))
        rt = await live.runtime()
        drift = {d.code: d for d in await rt.ledger.open_drifts(target="hub-weu")}
        who = drift["BRANCH_TO_BRANCH_DISABLED"].changed_by
        assert who is not None and who.source.value == "activity-log"
        assert who.who == "alice@contoso.example" and who.operation == "Microsoft.Network/virtualHubs/write"
        assert any(r.op == "activity.list" for r in emulator.requests)
    finally:
        emulator.events = None
        pub.close()



async def test_a_pass_that_could_not_be_queued_is_queued_by_the_redelivery(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str
) -> None:
    from reconciler.errors import TransientError

    await fns["reconcile_event"](decoded(sample("write-success.eventgrid", HUB)))
    _take(env, storage_prefix)
    await function_app.EVENTS.claim("hub-weu")  # that pass ran
    QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix).delete_queue()
    event = sample("delete-success.eventgrid", CONN)
    with pytest.raises(TransientError):  # the function fails: Event Grid delivers it again
        await fns["reconcile_event"](decoded(event))
    QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix).create_queue()
    await fns["reconcile_event"](decoded(event))  # not a replay, and no phantom pending pass to join
    assert queued(env, storage_prefix) == [("hub-weu", "event")]


def _report(emulator: ArmEmulator, nonce: str) -> func.HttpRequest:
    """A change report as the emulated NVA's agent signs it: an edit made outside the agent."""
    from reconciler.change_report import report_key, sign

    body = json.dumps({"v": 1, "nva_ip": scenarios.NVA_IP, "kind": "config", "at": datetime.now(UTC).isoformat(),
                       "by": "outside-agent", "summary": "x", "old_hash": "", "new_hash": ""}).encode()  # fmt: skip
    ts = int(time.time())
    headers = {"x-ars-timestamp": str(ts), "x-ars-nonce": nonce,
               "x-ars-signature": sign(report_key(emulator.world.nva(scenarios.NVA_IP).agent_token), ts, nonce, body)}  # fmt: skip
    return func.HttpRequest("POST", "http://localhost/api/agent/changes", headers=headers, params={},
                            route_params={}, body=body)  # fmt: skip


async def test_an_agent_report_is_not_held_back_by_the_event_settle_delay(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str, emulator: ArmEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    settings = live.settings.model_copy(update={"event_settle": 30.0, "report_settle": 0.0})
    monkeypatch.setattr(function_app, "EVENTS", EventIntake(settings))
    answer = await fns["agent_report_http"](_report(emulator, "ef" * 16))
    assert answer.status_code == 202, answer.get_body()
    # Visible at once: the agent read FRR after the change, there is no burst to wait for.
    assert queued(env, storage_prefix) == [("hub-neu", "event"), ("hub-weu", "event")]
    _take(env, storage_prefix)
    for target in ("hub-neu", "hub-weu"):
        await function_app.EVENTS.claim(target)
    await fns["reconcile_event"](decoded(sample("write-success.eventgrid", HUB)))
    assert function_app.EVENTS.counts[Verdict.ACCEPTED] == 2
    assert queued(env, storage_prefix) == []  # an ARM write's pass waits out the settle delay


async def test_a_report_that_could_not_be_queued_is_accepted_when_the_agent_sends_it_again(
    live: Worker, fns: dict[str, Any], env: dict[str, str], storage_prefix: str, emulator: ArmEmulator
) -> None:
    signed = _report(emulator, "cd" * 16)

    await fns["reconcile_event"](decoded(sample("write-success.eventgrid", HUB)))  # builds the clients
    _take(env, storage_prefix)
    await function_app.EVENTS.claim("hub-weu")
    QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix).delete_queue()
    failed = await fns["agent_report_http"](signed)
    assert failed.status_code >= 500  # the agent retries 5xx
    QueueClient.from_connection_string(env["ARS_STORAGE_CONNECTION"], storage_prefix).create_queue()
    again = await fns["agent_report_http"](signed)  # the same signed request: not a replay
    assert again.status_code == 202, again.get_body()
    assert ("hub-weu", "event") in queued(env, storage_prefix)
