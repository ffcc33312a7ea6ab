"""HTTP request rules and responses (reconciler.http_api): pure, no server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler import http_api as api
from reconciler.errors import ConfigurationError, DesiredStateError, PermanentError, TransientError

TARGETS = ["hub-a", "hub-b"]


def refused(fn: object, *args: object) -> api.ApiError:
    with pytest.raises(api.ApiError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


def test_empty_post_reconciles_every_target_for_real() -> None:
    assert api.parse_reconcile(b"", {}, TARGETS) == api.ReconcileRequest(dry_run=False, target=None)


def test_body_and_query_may_both_carry_fields_when_they_agree() -> None:
    got = api.parse_reconcile(b'{"dry_run": true}', {"target": "hub-b", "dry_run": "1"}, TARGETS)
    assert got == api.ReconcileRequest(dry_run=True, target="hub-b")


def test_a_null_target_in_the_body_means_all_targets() -> None:
    assert api.parse_reconcile(b'{"target": null}', {}, TARGETS).target is None


@pytest.mark.parametrize(
    ("body", "params", "status", "code"),
    [
        (b"{", {}, 400, "invalid_json"),
        (b'"hub-a"', {}, 400, "invalid_body"),
        (b'{"dry_run": 1}', {}, 400, "invalid_field"),
        (b'{"dry_run": true, "extra": 1}', {}, 400, "unknown_body_field"),
        (b'{"target": "hub-c"}', {}, 404, "unknown_target"),
        (b"", {"target": ""}, 404, "unknown_target"),
        (b"", {"dry_run": ""}, 400, "invalid_query"),
        (b'{"target": "hub-a"}', {"target": "hub-b"}, 400, "conflicting_fields"),
        (b" " * 10 + b"{}" + b" " * api.MAX_BODY, {}, 413, "body_too_large"),
        (b"[" * 10_000, {}, 400, "invalid_json"),  # deeper than Python's recursion limit
        (b'{"target": ' * 1400, {}, 400, "invalid_json"),
    ],
)
def test_bad_reconcile_requests_are_refused_with_a_code(
    body: bytes, params: dict[str, str], status: int, code: str
) -> None:
    err = refused(api.parse_reconcile, body, params, TARGETS)
    assert (err.status, err.code) == (status, code)
    payload = json.loads(err.response().json_bytes())
    assert payload == {"error": {"code": code, "message": err.message}}


def test_the_rules_do_not_answer_405_the_host_routes_by_method() -> None:
    # The Functions host answers a wrong method with 404 before the function runs; no rule here
    # may pretend otherwise (a 405 would only ever exist in a local stand-in).
    assert not hasattr(api, "require_method")
    assert "405" not in Path(api.__file__).read_text()


def test_drift_query_validates_severity_and_target() -> None:
    assert api.parse_drift_query({"severity": "warning"}, TARGETS) == api.DriftQuery(None, "warning")
    assert refused(api.parse_drift_query, {"severity": "CRITICAL"}, TARGETS).status == 400
    assert refused(api.parse_drift_query, {"target": "x"}, TARGETS).status == 404


@pytest.mark.parametrize(("limit", "ok"), [("1", True), ("100", True), ("0", False), ("101", False), ("1.5", False),
                                            (" 5", False), ("²", False)])
def test_runs_limit_is_1_to_100(limit: str, ok: bool) -> None:
    if ok:
        assert api.parse_runs_query({"limit": limit}, TARGETS).limit == int(limit)
    else:
        assert refused(api.parse_runs_query, {"limit": limit}, TARGETS).code == "invalid_query"


def report(*statuses: str) -> dict[str, object]:
    return {"targets": [{"target": f"t{i}", "status": s} for i, s in enumerate(statuses)]}


def test_409_when_the_asked_target_is_locked() -> None:
    assert api.reconcile_response(report("locked"), "t0").status == 409
    assert api.reconcile_response(report("drift"), "t0").status == 200


def test_without_a_target_409_only_when_every_target_was_locked() -> None:
    assert api.reconcile_response(report("locked", "locked"), None).status == 409
    assert api.reconcile_response(report("locked", "ok"), None).status == 200


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (TransientError("storage down"), 503, "unavailable"),
        (DesiredStateError("d.yaml", [("targets[0]", "bad"), ("x", "y")]), 503, "misconfigured"),
        (ConfigurationError("setting X: bad"), 503, "misconfigured"),
        (PermanentError("403 from ARM"), 502, "dependency_failed"),
        (KeyError("secret internals"), 500, "internal"),
    ],
)
def test_failures_map_to_json_errors_without_internals(exc: Exception, status: int, code: str) -> None:
    resp = api.from_exception(exc)
    assert (resp.status, resp.body["error"]["code"]) == (status, code)
    assert "secret internals" not in resp.body["error"]["message"]
    assert "\n" not in resp.body["error"]["message"]


@dataclass(frozen=True)
class P:
    pass_id: str
    trigger: str
    started_at: datetime
    targets: tuple[str, ...]
    errors: tuple[str, ...] = ()
    dry_run: bool = False


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TICK = timedelta(minutes=5)


def health(passes: list[P]) -> api.ApiResponse:
    return api.health(TARGETS, passes, now=NOW, interval=TICK, schedule="0 */5 * * * *", fanout=False)


def test_health_is_ok_when_every_target_passed_within_two_ticks() -> None:
    resp = health([P("p2", "timer", NOW - timedelta(minutes=4), ("hub-a", "hub-b"))])
    assert resp.status == 200 and resp.body["status"] == "ok"
    assert [r["age_s"] for r in resp.body["targets"]] == [240.0, 240.0]


def test_health_uses_each_targets_last_success_not_the_last_pass() -> None:
    passes = [
        P("p3", "queue", NOW - timedelta(minutes=1), ("hub-a",), errors=("hub-a/lease: storage down",)),
        P("p2", "http", NOW - timedelta(minutes=2), ("hub-a", "hub-b"), dry_run=True),
        P("p1", "timer", NOW - timedelta(minutes=12), ("hub-a", "hub-b"), errors=("alerts: teams down",)),
    ]
    body = health(passes).body
    assert [r["last_pass_id"] for r in body["targets"]] == ["p1", "p1"]  # a global error is not the target's
    assert body["stale_targets"] == ["hub-a", "hub-b"]  # 12 min > 2 ticks + 1 min


def test_alert_step_problems_make_health_degraded_not_stale() -> None:
    """On main an alert-step failure (a dead letter, a card that could not be built) left health ok."""
    passes = [
        P("p2", "timer", NOW - timedelta(minutes=1), ("hub-a", "hub-b"),
          errors=("hub-a/alerts: hub-a: a card was dead-lettered after 3 rejection(s): HTTP 413",)),
        P("p1", "timer", NOW - timedelta(minutes=6), ("hub-a", "hub-b")),
    ]
    resp = health(passes)
    assert resp.status == 200 and resp.body["status"] == "degraded"
    assert resp.body["alerts_degraded_targets"] == ["hub-a"] and resp.body["stale_targets"] == []
    assert [r["last_pass_id"] for r in resp.body["targets"]] == ["p2", "p2"]  # still a success for staleness
    assert api.health_summary(resp).body["status"] == "degraded"
    # the next pass without problems clears it
    assert health([P("p3", "timer", NOW, ("hub-a", "hub-b")), *passes]).body["status"] == "ok"


def test_health_is_503_for_a_target_that_never_passed() -> None:
    resp = health([P("p1", "timer", NOW, ("hub-a",))])
    assert resp.status == 503 and resp.body["stale_targets"] == ["hub-b"]
    assert resp.body["targets"][1]["last_success"] is None


def test_json_bytes_renders_datetimes_and_tuples() -> None:
    body = json.loads(api.ApiResponse(200, {"at": NOW, "t": ("a",), "d": TICK}).json_bytes())
    assert body == {"at": "2026-11-25T12:00:00+00:00", "t": ["a"], "d": 300.0}
