"""Teams delivery against a real local webhook receiver, and the outbox against Azurite."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from localenv.azurite import Azurite
from localenv.webhook import ACCEPT, Reply, WebhookReceiver, fail, hang, throttle
from reconciler.alerts import AlertRules, AlertState, Announced, Status
from reconciler.drift import Drift, DriftCode
from reconciler.errors import PermanentError, TransientError
from reconciler.notify import AlertStep, heartbeat, notify
from reconciler.outbox import MAX_REJECTIONS, AlertStore, MessageRejected
from reconciler.outcome import ActionOutcome
from reconciler.plan import Step, StepKind
from reconciler.service import StepOutcome, TargetReport
from reconciler.teams import Pacer, TeamsWebhook
from tests.unit import factories

pytestmark = pytest.mark.azurite

SIG = "SECRETsig0123456789abcdefXYZ"
SECRET_PATH = f"/workflows/9f8e7d6c5b4a39281706f5e4d3c2b1a0/triggers/manual/paths/invoke?api-version=2016-06-01&sig={SIG}"


@dataclass
class FakeTime:
    """A monotonic clock that only moves when someone sleeps on it."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


@pytest.fixture
async def store(azurite: Azurite, storage_prefix: str) -> AsyncIterator[AlertStore]:
    async with AlertStore(azurite.connection_string, storage_prefix) as s:
        yield s


def hook_for(webhook: WebhookReceiver, client: httpx.AsyncClient, fake: FakeTime | None = None,
             **kw: float) -> TeamsWebhook:
    """A webhook sender with no pacing and, with `fake`, no real waiting."""
    fake = fake or FakeTime()
    kw.setdefault("timeout", 0.3)
    return TeamsWebhook(webhook.url, client, pacer=Pacer(0.0, fake.clock, fake.sleep),
                        clock=fake.clock, sleep=fake.sleep, **kw)  # type: ignore[arg-type]


# --- the adapter ------------------------------------------------------------------------------


async def test_202_is_success_and_body_and_idempotency_key_arrive(webhook: WebhookReceiver,
                                                                   client: httpx.AsyncClient) -> None:
    await hook_for(webhook, client).send(b'{"type":"message"}', "key-1")
    [req] = webhook.requests()
    assert (req.status, req.body) == (202, b'{"type":"message"}')
    assert req.headers["idempotency-key"] == "key-1"
    assert req.headers["content-type"] == "application/json"


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_any_2xx_is_success(webhook: WebhookReceiver, client: httpx.AsyncClient, status: int) -> None:
    webhook.script(Reply(status))
    await hook_for(webhook, client).send(b"{}", "k")
    assert len(webhook.requests()) == 1


async def test_429_retry_after_is_honoured_on_the_wire(webhook: WebhookReceiver, client: httpx.AsyncClient) -> None:
    webhook.script(throttle("1"))
    sender = TeamsWebhook(webhook.url, client, timeout=2.0)  # real clock, real sleep, real pacer
    await sender.send(b"{}", "k")
    first, second = webhook.wait_for(2)
    assert (first.status, second.status) == (429, 202)
    assert second.at - first.at >= 0.9  # arrival times carry a little thread-scheduling noise


async def test_retry_after_seconds_and_http_date_are_both_understood(webhook: WebhookReceiver,
                                                                      client: httpx.AsyncClient) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    webhook.script(throttle("7"), Reply(503, retry_after=later), ACCEPT)
    fake = FakeTime()
    await hook_for(webhook, client, fake, max_total=120).send(b"{}", "k")
    assert fake.slept[0] == 7
    assert 25 <= fake.slept[1] <= 31
    assert len(webhook.requests()) == 3


async def test_5xx_is_retried_with_backoff_until_accepted(webhook: WebhookReceiver, client: httpx.AsyncClient) -> None:
    webhook.script(fail(500), fail(502), fail(503))
    fake = FakeTime()
    await hook_for(webhook, client, fake).send(b"{}", "k")
    assert [r.status for r in webhook.requests()] == [500, 502, 503, 202]
    assert fake.slept == [0.5, 1.0, 2.0]


async def test_attempts_are_bounded_then_transient(webhook: WebhookReceiver, client: httpx.AsyncClient) -> None:
    webhook.default = fail(500)
    with pytest.raises(TransientError, match="after 4 attempt"):
        await hook_for(webhook, client, max_attempts=4).send(b"{}", "k")
    assert len(webhook.requests()) == 4


async def test_retry_after_beyond_the_time_budget_gives_up_at_once(webhook: WebhookReceiver,
                                                                    client: httpx.AsyncClient) -> None:
    webhook.script(throttle("3600"))
    fake = FakeTime()
    with pytest.raises(TransientError, match="budget"):
        await hook_for(webhook, client, fake, max_total=30, max_retry_after=3600).send(b"{}", "k")
    assert fake.slept == [] and len(webhook.requests()) == 1


async def test_timeout_is_retried(webhook: WebhookReceiver, client: httpx.AsyncClient) -> None:
    webhook.script(hang(10))
    # 0.5 s, not less: on a loaded machine a slow 202 would itself time out and be sent twice.
    await hook_for(webhook, client, timeout=0.5).send(b"{}", "k")
    assert [r.status for r in webhook.requests()] == [None, 202]


@pytest.mark.parametrize(("status", "error"), [(400, MessageRejected), (413, MessageRejected),
                                               (401, PermanentError), (403, PermanentError), (404, PermanentError)])
async def test_client_errors_are_not_retried(webhook: WebhookReceiver, client: httpx.AsyncClient,
                                             status: int, error: type[Exception]) -> None:
    webhook.default = Reply(status)
    with pytest.raises(error):
        await hook_for(webhook, client).send(b"{}", "k")
    assert len(webhook.requests()) == 1


async def test_pacer_keeps_requests_at_most_four_per_second(webhook: WebhookReceiver,
                                                            client: httpx.AsyncClient) -> None:
    sender = TeamsWebhook(webhook.url, client)  # default pacer: 0.25 s
    await asyncio.gather(*(sender.send(b"{}", f"k{i}") for i in range(5)))
    arrivals = sorted(r.at for r in webhook.wait_for(5))
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Unpaced, these arrive ~1 ms apart; allow for scheduling noise on each arrival stamp.
    assert min(gaps) >= 0.2, gaps
    assert arrivals[-1] - arrivals[0] >= 0.95, gaps


async def test_pacer_counts_retries_too() -> None:
    fake = FakeTime()
    pacer = Pacer(0.25, fake.clock, fake.sleep)
    for _ in range(4):
        await pacer.wait()
    assert fake.slept == [0.25, 0.25, 0.25]
    fake.now += 10
    await pacer.wait()
    assert len(fake.slept) == 3  # idle long enough: no wait


# --- the secret -------------------------------------------------------------------------------


def secret_hook(webhook: WebhookReceiver) -> WebhookReceiver:
    webhook.path = SECRET_PATH
    return webhook


def assert_no_secret(text: str, webhook: WebhookReceiver) -> None:
    assert SIG not in text
    assert webhook.url not in text
    assert "9f8e7d6c5b4a39281706f5e4d3c2b1a0" not in text


async def test_webhook_url_never_appears_in_errors_reprs_or_tracebacks(webhook: WebhookReceiver,
                                                                       client: httpx.AsyncClient) -> None:
    secret_hook(webhook)
    seen: list[str] = []
    for reply in (fail(500), hang(10), Reply(404), Reply(400)):
        webhook.default = reply
        sender = hook_for(webhook, client, max_attempts=2, timeout=0.2)
        seen.append(repr(sender))
        with pytest.raises((TransientError, PermanentError)) as info:
            await sender.send(b"{}", "k")
        seen += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
    unreachable = TeamsWebhook("http://127.0.0.1:9" + SECRET_PATH, client, max_attempts=1)
    with pytest.raises(TransientError) as info:
        await unreachable.send(b"{}", "k")
    seen += [str(info.value), "".join(traceback.format_exception(info.value))]
    assert_no_secret("\n".join(seen), webhook)


# --- the outbox -------------------------------------------------------------------------------


async def test_outbox_delivers_in_order_once(store: AlertStore, webhook: WebhookReceiver,
                                             client: httpx.AsyncClient) -> None:
    for i in range(3):
        assert await store.enqueue("hub/a", f'{{"n":{i}}}'.encode(), f"key-{i}")
    assert not await store.enqueue("hub/a", b'{"n":0}', "key-0")  # same key: already queued
    report = await store.flush(hook_for(webhook, client))
    assert (report.sent, report.failed, report.pending) == (3, 0, 0)
    assert [r.json()["n"] for r in webhook.requests()] == [0, 1, 2]
    assert (await store.flush(hook_for(webhook, client))).sent == 0
    assert [e.sent for e in await store.entries("hub/a")] == [True, True, True]


async def test_flush_stops_a_target_at_its_first_failure_others_continue(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    for target in ("a", "b"):
        for i in range(2):
            await store.enqueue(target, json.dumps({"t": target, "n": i}).encode(), f"{target}{i}")
    webhook.script(fail(500))  # a#0 fails (one attempt), then everything is accepted
    report = await store.flush(hook_for(webhook, client, max_attempts=1))
    assert (report.sent, report.failed, report.pending) == (2, 1, 2)
    assert [(r.json()["t"], r.json()["n"]) for r in webhook.accepted()] == [("b", 0), ("b", 1)]
    [first, _] = await store.pending(["a"])
    assert first.attempts == 1 and "HTTP 500" in first.last_error
    report = await store.flush(hook_for(webhook, client))
    assert (report.sent, report.pending) == (2, 0)
    assert [(r.json()["t"], r.json()["n"]) for r in webhook.accepted()][2:] == [("a", 0), ("a", 1)]


@pytest.mark.parametrize("status", [400, 413])
async def test_rejected_message_is_retried_a_bounded_number_of_times_then_dead_lettered_not_blocking(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient, status: int
) -> None:
    """On main a single 400/413 dead-lettered the card at once, with no second try."""
    await store.enqueue("a", b'{"n":0}', "k0", {"a|PEER_DOWN|peer=x": "firing"})
    await store.enqueue("a", b'{"n":1}', "k1")
    webhook.script(*[Reply(status)] * MAX_REJECTIONS)
    sender = hook_for(webhook, client)
    for attempt in range(1, MAX_REJECTIONS):
        report = await store.flush(sender)
        assert (report.sent, report.rejected, report.pending, report.dead) == (0, 1, 2, ()), attempt
    report = await store.flush(sender)
    assert (report.sent, report.rejected, report.pending) == (1, 1, 0)
    [dead] = report.dead
    assert dead.attempts == MAX_REJECTIONS and dead.announces == {"a|PEER_DOWN|peer=x": "firing"}
    assert [(e.dead, e.sent) for e in await store.entries("a")] == [(True, False), (False, True)]
    assert [e.seq for e in await store.dead_letters("a", datetime.now(UTC) - timedelta(hours=1))] == [1]
    assert [r.json()["n"] for r in webhook.requests()] == [0] * MAX_REJECTIONS + [1]  # order held


async def test_concurrent_enqueues_get_distinct_ordered_sequence_numbers(azurite: Azurite, storage_prefix: str,
                                                                         store: AlertStore) -> None:
    async with AlertStore(azurite.connection_string, storage_prefix) as other:
        await store.enqueue("hub", b"{}", "first")  # creates the tables and the counter
        results = await asyncio.gather(*(
            (store if i % 2 else other).enqueue("hub", b"{}", f"k{i}") for i in range(12)
        ))
    assert all(results)
    assert [e.seq for e in await store.entries("hub")] == list(range(1, 14))


async def test_states_round_trip_and_removed_ones_are_deleted(store: AlertStore) -> None:
    t0 = datetime(2026, 11, 25, tzinfo=UTC)

    def state(target: str, subject: str) -> AlertState:
        d = Drift(target, DriftCode.ROUTE_MISSING, subject, "m")
        return AlertState(d.identity, target, d.code, subject, Status.FIRING, True, t0, t0,
                          announced=Announced.FIRING, last_notified=t0, transitions=(t0,))

    a = state("hub/1", "peer=nva1/instance=x/prefix=0.0.0.0/0")
    b = state("hub/1", "peer=nva1/instance=x/prefix=10.0.0.0/8")
    c = state("hub#2", "peer=nva2/instance=y/prefix=0.0.0.0/0")
    await store.save_states({s.identity: s for s in (a, b, c)}, ["hub/1", "hub#2"])
    assert await store.load_states(["hub/1", "hub#2"]) == {s.identity: s for s in (a, b, c)}
    await store.save_states({a.identity: a}, ["hub/1"])
    assert await store.load_states(["hub/1", "hub#2"]) == {a.identity: a, c.identity: c}


async def test_storage_down_is_a_transient_error(private_azurite: Azurite, storage_prefix: str) -> None:
    async with AlertStore(private_azurite.connection_string, storage_prefix, retry_total=0) as s:
        await s.load_states(["hub"])
        private_azurite.stop()
        with pytest.raises(TransientError):
            await s.enqueue("hub", b"{}", "k")


# --- a whole alert step -----------------------------------------------------------------------

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PEER_FAILED = Drift("hub-weu", DriftCode.PEER_FAILED, "peer=nva1", "bgpConnection Failed",
                    expected="Succeeded", observed="Failed")
UDR = Drift("hub-neu", DriftCode.UDR_INVARIANT_BROKEN, "subnet=hub:AzureFirewallSubnet/prefix=0.0.0.0/0", "lost")
TARGETS = ("hub-weu", "hub-neu")
DRIFT_URL = "http://127.0.0.1:7071"  # the app's base URL: cards link /api/drift?target= and /api/runs/{id}


async def run_pass(store: AlertStore, sender: TeamsWebhook, n: int, *drifts: Drift,
                   blind: dict[str, str] | None = None) -> tuple[int, int, int]:
    report = await notify(store, sender, list(drifts), blind or {}, TARGETS, None, T0 + timedelta(minutes=5 * n),
                          AlertRules(), f"pass-{n}", DRIFT_URL)
    return report.enqueued, report.delivery.sent, report.delivery.pending


def titles(webhook: WebhookReceiver) -> list[tuple[str, str]]:
    """(target, title) of every accepted card, in arrival order."""
    out = []
    for r in webhook.accepted():
        header = r.json()["attachments"][0]["content"]["body"][0]["items"][0]["text"]
        words = header.split(" · ")  # WORD · severity · target, or WORD · target for a notice
        out.append((words[-1], words[0]))
    return out


async def test_restart_neither_respams_nor_forgets_the_resolution(azurite: Azurite, storage_prefix: str,
                                                                  webhook: WebhookReceiver,
                                                                  client: httpx.AsyncClient) -> None:
    sender = hook_for(webhook, client)
    async with AlertStore(azurite.connection_string, storage_prefix) as first:
        assert await run_pass(first, sender, 0, PEER_FAILED, UDR) == (2, 2, 0)
    async with AlertStore(azurite.connection_string, storage_prefix) as restarted:  # a new worker
        assert await run_pass(restarted, sender, 1, PEER_FAILED, UDR) == (0, 0, 0)
        assert await run_pass(restarted, sender, 2, UDR) == (1, 1, 0)
    assert titles(webhook) == [("hub-neu", "FIRING"), ("hub-weu", "FIRING"), ("hub-weu", "RESOLVED")]


async def test_teams_down_pass_is_delivered_on_the_next_in_order(store: AlertStore, webhook: WebhookReceiver,
                                                                 client: httpx.AsyncClient) -> None:
    sender = hook_for(webhook, client, max_attempts=2)
    webhook.default = fail(503)
    assert await run_pass(store, sender, 0, PEER_FAILED, UDR) == (2, 0, 2)
    assert await run_pass(store, sender, 1, UDR) == (1, 0, 3)  # still down: hub-weu's resolution queues
    webhook.default = ACCEPT
    assert await run_pass(store, sender, 2, UDR) == (0, 3, 0)
    assert titles(webhook) == [("hub-neu", "FIRING"), ("hub-weu", "FIRING"), ("hub-weu", "RESOLVED")]


async def test_retried_pass_id_sends_nothing_twice(store: AlertStore, webhook: WebhookReceiver,
                                                   client: httpx.AsyncClient) -> None:
    sender = hook_for(webhook, client)
    await run_pass(store, sender, 0, PEER_FAILED)
    [key] = [r.headers["idempotency-key"] for r in webhook.accepted()]
    # A queue redelivery of pass 0 after its states were lost: same pass id → same key → nothing new.
    await store.save_states({}, TARGETS)
    assert await run_pass(store, sender, 0, PEER_FAILED) == (0, 0, 0)
    assert [r.headers["idempotency-key"] for r in webhook.accepted()] == [key]


async def test_mixed_failures_lose_nothing_duplicate_nothing_and_keep_order(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    sender = hook_for(webhook, client, max_attempts=2, timeout=0.5)
    webhook.script(fail(500), throttle("0"), hang(10), fail(502), ACCEPT, fail(500), fail(500), hang(10), hang(10))
    queued: dict[str, list[str]] = {}
    targets = [f"hub-{i}" for i in range(3)]
    for n in range(4):
        for t in targets:
            key = f"pass-{n}-{t}"
            await store.enqueue(t, json.dumps({"t": t, "n": n}).encode(), key)
            queued.setdefault(t, []).append(key)
        await store.flush(sender)
    for _ in range(5):  # the receiver is healthy again: drain
        if (await store.flush(sender)).pending == 0:
            break
    accepted = webhook.accepted()
    keys = [r.headers["idempotency-key"] for r in accepted]
    assert len(keys) == len(set(keys)) == 12  # none lost, none twice
    for t in targets:
        assert [r.headers["idempotency-key"] for r in accepted if r.json()["t"] == t] == queued[t]


async def test_a_poisoned_target_is_announced_blind_without_a_hand_built_report(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    step = AlertStep(store, hook_for(webhook, client), AlertRules(blind_for=timedelta(0)), DRIFT_URL, None, client)
    result = await step.poisoned("hub-weu", "failed 5 time(s)", T0)
    assert result["enqueued"] == 1 and result["delivery"]["sent"] == 1
    assert titles(webhook) == [("hub-weu", "RECONCILER BLIND")]
    assert "poison message: failed 5 time" in webhook.accepted()[0].body.decode()


# --- secrets in logs --------------------------------------------------------------------------


async def test_notify_pass_with_failing_webhook_logs_neither_url_nor_sig(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret_hook(webhook)
    webhook.default = fail(500)
    caplog.set_level(logging.DEBUG)  # everything, from every logger, httpx and httpcore included
    sender = hook_for(webhook, client, max_attempts=2)
    report = await notify(store, sender, [PEER_FAILED, UDR], {}, TARGETS, None, T0, AlertRules(), "p", DRIFT_URL)
    ok = await heartbeat("http://127.0.0.1:9/ping/" + SIG, client)
    assert not ok
    assert report.delivery.failed == 2 and report.delivery.pending == 2
    assert "HTTP Request: POST" in caplog.text  # httpx did log every request line…
    assert "[redacted]" in caplog.text  # …with the secret scrubbed
    assert_no_secret(caplog.text + repr(report) + repr(sender), webhook)


async def test_heartbeat_pings_and_reports(webhook: WebhookReceiver, client: httpx.AsyncClient) -> None:
    assert await heartbeat(webhook.url, client)
    webhook.default = fail(500)
    assert not await heartbeat(webhook.url, client)
    assert [r.method for r in webhook.requests()] == ["GET", "GET"]


# --- nothing stops the alerts; no injection (each fails on the old one-card-per-target builder) ----


async def test_a_lone_surrogate_in_one_drift_does_not_stop_the_alerts_of_any_target(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    """Before: json.dumps(...).encode("utf-8") raised UnicodeEncodeError and no card went out."""
    bad = Drift("hub-weu", DriftCode.PEER_FAILED, "peer=nva1", "agent said \ud800", observed="\udfff")
    report = await notify(store, hook_for(webhook, client), [bad, UDR], {}, TARGETS, None, T0, AlertRules(), "p",
                          DRIFT_URL)
    assert report.delivery.sent == 2 and report.problems == ()
    assert sorted(titles(webhook)) == [("hub-neu", "FIRING"), ("hub-weu", "FIRING")]
    assert "agent said \ufffd" in "".join(r.body.decode("utf-8") for r in webhook.accepted())


async def test_a_markdown_link_in_agent_text_reaches_teams_inert(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    evil = Drift("hub-weu", DriftCode.PEER_FAILED, "peer=nva1", "[Sign in](https://evil.example/login)",
                 observed="[Sign in](https://evil.example/login)")
    await notify(store, hook_for(webhook, client), [evil], {}, TARGETS, None, T0, AlertRules(), "p", DRIFT_URL)
    [card] = webhook.accepted()
    texts = json.dumps(card.json()["attachments"][0]["content"]["body"], ensure_ascii=False)
    assert "[Sign in](" not in texts and "https://evil" not in texts
    assert "https\\\\[:\\\\]//evil.example" in texts  # shown, defanged and escaped


# --- fixed automatically --------------------------------------------------------------------------


def fixed_report(drift: Drift) -> TargetReport:
    step = Step(drift.target, StepKind.AGENT_INTENT, "nva1", (drift.identity,), "ROUTE_NEXT_HOP_WRONG")
    return TargetReport(drift.target, status="ok", drifts=[drift], outcomes=[
        StepOutcome(step, ActionOutcome.FIXED, "agent: next hop set")], remaining=[])


@pytest.mark.parametrize("notice", [True, False])
async def test_drift_fixed_within_a_pass_is_a_compact_notice_unless_switched_off(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient, notice: bool
) -> None:
    hop = Drift("hub", DriftCode.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=IN_0/prefix=0.0.0.0/0", "wrong",
                expected="next hop 10.0.3.4", observed="next hop 10.0.1.6")
    step = AlertStep(store, hook_for(webhook, client), AlertRules(), DRIFT_URL, None, client, fixed_notice=notice)
    await step.after_target(factories.target(), fixed_report(hop), "p1", T0)
    assert titles(webhook) == ([("hub", "FIXED AUTOMATICALLY")] if notice else [])


async def test_a_fix_of_drift_the_channel_already_heard_is_its_resolved_card_not_a_notice(
    store: AlertStore, webhook: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    udr = Drift("hub", DriftCode.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0", "lost")
    step = AlertStep(store, hook_for(webhook, client), AlertRules(), DRIFT_URL, None, client)
    firing = TargetReport("hub", status="drift", drifts=[udr], remaining=[udr])
    await step.after_target(factories.target(), firing, "p1", T0)
    await step.after_target(factories.target(), fixed_report(udr), "p2", T0 + timedelta(minutes=5))
    assert titles(webhook) == [("hub", "FIRING"), ("hub", "RESOLVED")]
