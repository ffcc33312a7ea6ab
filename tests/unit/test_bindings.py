"""The app as the host indexes it: binding metadata, parameter names, auth levels, host.json and the
settings every deployment must know about (local.settings.sample.json, docs/deploy.md)."""

from __future__ import annotations

import inspect
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import function_app
from localenv.host import PollDelay, bindings, functions, trigger
from reconciler.fanout import HostQueueRules
from reconciler.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
HTTP_ROUTES = {
    "reconcile_http": ("reconcile", ["POST"], "FUNCTION"),
    "drift_http": ("drift", ["GET"], "FUNCTION"),
    "runs_http": ("runs", ["GET"], "FUNCTION"),
    "run_http": ("runs/{pass_id}", ["GET"], "FUNCTION"),
    "health_http": ("health", ["GET"], "ANONYMOUS"),
    "health_details_http": ("health/details", ["GET"], "FUNCTION"),
    "trace_http": ("trace", ["GET"], "FUNCTION"),
    "status_http": ("status", ["GET"], "FUNCTION"),
    "static_http": ("static/{name}", ["GET"], "ANONYMOUS"),  # a stylesheet, nothing secret
    "agent_report_http": ("agent/changes", ["POST"], "FUNCTION"),
}


@pytest.fixture(scope="module")
def fns() -> dict[str, Any]:
    return functions(function_app.app)


def test_the_app_has_exactly_these_functions(fns: dict[str, Any]) -> None:
    assert set(fns) == {
        "reconcile_timer", "retention_timer", "reconcile_queue", "reconcile_poison", "reconcile_event", *HTTP_ROUTES
    }


def test_the_event_function_is_an_event_grid_trigger(fns: dict[str, Any]) -> None:
    assert trigger(fns["reconcile_event"])["type"] == "eventGridTrigger"


def test_every_parameter_name_matches_a_binding_name(fns: dict[str, Any]) -> None:
    for name, fn in fns.items():
        params = set(inspect.signature(fn.get_user_function()).parameters)
        names = {b["name"] for b in bindings(fn) if b["name"] != "$return"}
        assert params == names, f"{name}: parameters {sorted(params)} != bindings {sorted(names)}"


def test_every_function_is_async_so_it_runs_on_the_workers_loop(fns: dict[str, Any]) -> None:
    assert all(inspect.iscoroutinefunction(fn.get_user_function()) for fn in fns.values())


@pytest.mark.parametrize("name", sorted(HTTP_ROUTES))
def test_http_route_method_and_auth_level(fns: dict[str, Any], name: str) -> None:
    t = trigger(fns[name])
    assert (t["type"], t["route"], t["methods"], t["authLevel"]) == ("httpTrigger", *HTTP_ROUTES[name])
    assert any(b["type"] == "http" and b["name"] == "$return" for b in bindings(fns[name]))


def test_retention_runs_daily_on_a_timer(fns: dict[str, Any]) -> None:
    from reconciler.schedule import parse

    t = trigger(fns["retention_timer"])
    assert (t["type"], t["runOnStartup"], t["useMonitor"]) == ("timerTrigger", False, True)
    assert parse(t["schedule"]).interval(datetime(2026, 1, 1, tzinfo=UTC)) == timedelta(days=1)


def test_timer_schedule_comes_from_the_setting(fns: dict[str, Any]) -> None:
    t = trigger(fns["reconcile_timer"])
    assert t["schedule"] == function_app.SETTINGS.timer_schedule
    assert t["runOnStartup"] is False and t["useMonitor"] is True


def test_queue_triggers_bind_the_fanout_queue_and_its_poison_queue(fns: dict[str, Any]) -> None:
    work, poison = trigger(fns["reconcile_queue"]), trigger(fns["reconcile_poison"])
    assert work["queueName"] == function_app.SETTINGS.fanout_queue
    assert poison["queueName"] == work["queueName"] + "-poison"
    assert work["connection"] == poison["connection"] == "ARS_STORAGE_CONNECTION"


def host_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "host.json").read_text())
    return data


def test_host_json_timeout_fits_a_pass() -> None:
    h, m, s = (int(x) for x in host_json()["functionTimeout"].split(":"))
    timeout = timedelta(hours=h, minutes=m, seconds=s)
    d = Settings()
    # A pass: ARM reads (bounded by the read timeout), agent calls, verify wait, ledger and alerts.
    worst = timedelta(seconds=2 * d.arm_read_timeout + 2 * d.agent_timeout + d.verify_timeout + 60)
    assert worst <= timeout <= timedelta(minutes=30)


def test_host_json_queue_settings_and_bundle() -> None:
    h = host_json()
    q = h["extensions"]["queues"]
    assert q["messageEncoding"] == "base64"  # what reconciler.fanout sends
    assert 1 <= q["batchSize"] <= 8 and q["maxDequeueCount"] == 5
    assert h["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert h["extensions"]["http"]["routePrefix"] == "api"
    assert h["logging"]["logLevel"]["Function"] == "Information"


def test_queue_rules_are_read_from_host_json_and_its_app_setting_overrides() -> None:
    rules = HostQueueRules.load(ROOT / "host.json", {})
    assert (rules.max_dequeue_count, rules.visibility_timeout, rules.function_timeout) == (
        5, timedelta(seconds=30), timedelta(minutes=10)
    )
    assert rules == function_app.QUEUE_RULES
    over = HostQueueRules.load(ROOT / "host.json", {
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "3",
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
        "AzureFunctionsJobHost__functionTimeout": "1.00:00:00",
    })  # fmt: skip
    assert (over.max_dequeue_count, over.visibility_timeout, over.function_timeout) == (
        3, timedelta(seconds=1), timedelta(days=1)
    )
    with pytest.raises(ValueError, match="time span"):
        HostQueueRules.load(ROOT / "host.json", {"AzureFunctionsJobHost__functionTimeout": "10m"})
    # The line that stops the app names the setting to fix.
    with pytest.raises(ValueError, match=r"^setting AzureFunctionsJobHost__extensions__queues__visibilityTimeout "):
        HostQueueRules.load(ROOT / "host.json", {"AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "30"})
    with pytest.raises(ValueError, match=r"^setting AzureFunctionsJobHost__extensions__queues__maxDequeueCount "):
        HostQueueRules.load(ROOT / "host.json", {"AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "five"})


def test_an_idle_queue_is_polled_at_least_every_second_so_an_event_pass_starts_within_seconds() -> None:
    # The event path's latency includes the queue listener's polling; at the 1-minute default an
    # idle worker could leave an event pass's message unread for a minute.
    assert HostQueueRules.load(ROOT / "host.json", {}).max_polling_interval == timedelta(seconds=1)
    assert HostQueueRules().max_polling_interval == timedelta(minutes=1)  # the host's default
    over = {"AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:05"}
    assert HostQueueRules.load(ROOT / "host.json", over).max_polling_interval == timedelta(seconds=5)


def test_the_local_hosts_poll_delay_backs_off_like_the_queue_listener() -> None:
    delay = PollDelay(1.0, random.Random(7))
    idle = [delay.next(found=False) for _ in range(8)]
    # 100 ms + 100 ms x 2^(n-1) x 0.8..1.2: about 0.2, 0.3, 0.5, 0.9 s, then the 1 s maximum.
    for got, nominal in zip(idle, (0.2, 0.3, 0.5, 0.9), strict=False):
        assert nominal - 0.2 * (nominal - 0.1) <= got <= nominal + 0.2 * (nominal - 0.1)
    assert idle[4:] == [1.0] * 4
    assert delay.next(found=True) == 0.1  # a poll that found messages polls again soon
    assert 0.18 <= delay.next(found=False) <= 0.22  # and the back-off starts over
    assert PollDelay(60.0).next(found=False) < 1  # it grows from the minimum, not from the maximum


def test_a_fanout_message_lives_through_every_retry_the_host_makes() -> None:
    rules = HostQueueRules.load(ROOT / "host.json", {})
    tick = timedelta(minutes=5)
    # Each try may run to functionTimeout, then waits visibilityTimeout: 5 x (600 s + 30 s).
    assert rules.message_ttl(tick) == 5 * (600 + 30)
    assert rules.message_ttl(tick) > tick.total_seconds()  # one tick (the old TTL) is far too short
    assert HostQueueRules(1, timedelta(0), timedelta(seconds=10)).message_ttl(tick) == 300  # never below a tick


def setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.update(str(c) for c in choices) if choices else names.add(str(alias))
    return names


def test_every_setting_is_in_the_sample_the_readme_and_the_deploy_docs() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    missing_sample = setting_names() - set(sample)
    assert not missing_sample, f"add to local.settings.sample.json: {sorted(missing_sample)}"
    for doc in ("docs/deploy.md", "README.md"):
        text = (ROOT / doc).read_text()
        missing = {n for n in setting_names() if f"`{n}`" not in text}
        assert not missing, f"describe in {doc}: {sorted(missing)}"


def test_the_sample_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for k, v in sample.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.applicationinsights_connection_string is None  # "" means unset, not an empty secret
    assert s.arm_endpoint == "https://127.0.0.1:8443"


def test_host_json_overrides_reach_the_queue_rules_through_the_settings_read_at_load() -> None:
    settings = load_settings({"AzureFunctionsJobHost__functionTimeout": "00:01:00"})
    assert HostQueueRules.load(ROOT / "host.json", settings.app_settings).function_timeout == timedelta(minutes=1)
    with pytest.raises(TypeError):
        settings.app_settings["AzureFunctionsJobHost__functionTimeout"] = "01:00:00"  # type: ignore[index]
