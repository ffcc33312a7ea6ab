"""Hostile HTTP trigger input: any body and query -> a JSON answer below 500, never a traceback.

Two layers, both property-based: the pure request rules (`reconciler.http_api`, thousands of
inputs in milliseconds) and the Functions app's HTTP functions themselves, invoked as the host
would, against the ARM emulator and Azurite (a valid request runs a real pass, dry or not).
The hand-picked bad requests live in test_functions.py; this adds what a search finds.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import function_app
from emulator import ArmEmulator
from localenv.azurite import Azurite
from localenv.host import functions
from reconciler import http_api
from reconciler.composition import Worker
from tests.e2e.harness import A, B, fleet_desired, set_agent_tokens, settings_env, settle
from tests.fixtures.emulator import TWO_TARGETS

TARGETS = [A, B]
FIELDS = st.sampled_from(["dry_run", "target", "code", "severity", "limit", "DRY_RUN", "", "target\x00", "🔥"])
VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
    st.sampled_from([*TARGETS, "true", "false", "1", "0", "critical", "100", "101", "-1", "nan", "1e999"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)  # fmt: skip
JSON_BODIES = st.dictionaries(FIELDS, VALUES, max_size=4).map(lambda d: json.dumps(d).encode())
BODIES = st.one_of(
    JSON_BODIES,
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"", b"null", b"[]", b"1e999999", b'{"dry_run": true}' * 2, b"{" * 5000, b"[" * 10_000, b"x" * 70_000]),
)
PARAMS = st.dictionaries(FIELDS, st.text(max_size=20) | st.sampled_from([*TARGETS, "true", "1", "critical"]), max_size=3)


def is_json_error_below_500(resp: http_api.ApiResponse) -> None:
    assert 400 <= resp.status < 500, resp
    body = json.loads(resp.json_bytes())
    assert set(body["error"]) == {"code", "message"} and "Traceback" not in body["error"]["message"]


@settings(max_examples=1500, deadline=None)
@given(body=BODIES, params=PARAMS)
def test_reconcile_request_rules_refuse_bad_input_with_a_4xx(body: bytes, params: dict[str, str]) -> None:
    try:
        ask = http_api.parse_reconcile(body, params, TARGETS)
    except http_api.ApiError as exc:
        is_json_error_below_500(exc.response())
    else:
        assert ask.target in (None, *TARGETS) and isinstance(ask.dry_run, bool)


@settings(max_examples=500, deadline=None)
@given(params=PARAMS, which=st.sampled_from(["drift", "runs", "health"]))
def test_read_endpoint_rules_refuse_bad_input_with_a_4xx(params: dict[str, str], which: str) -> None:
    try:
        if which == "drift":
            http_api.parse_drift_query(params, TARGETS)
        elif which == "runs":
            http_api.parse_runs_query(params, TARGETS)
        else:
            http_api.parse_health(params)
    except http_api.ApiError as exc:
        is_json_error_below_500(exc.response())


# ---- the functions themselves -----------------------------------------------------------------


@pytest.fixture
def emulator_world_path() -> Path:
    return TWO_TARGETS


@pytest.fixture
async def worker(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Worker]:
    doc = tmp_path / "fleet.json"
    doc.write_text(fleet_desired(emulator).model_dump_json())
    for k, v in settings_env(emulator, azurite.connection_string, storage_prefix, ARS_DESIRED_STATE=str(doc)).items():
        monkeypatch.setenv(k, v)
    set_agent_tokens(emulator, monkeypatch)
    w = Worker.from_environment(function_app.APP_ROOT)
    monkeypatch.setattr(function_app, "WORKER", w)
    monkeypatch.setattr(function_app, "SETTINGS", w.settings)
    yield w
    await w.aclose()
    await settle(emulator)


ROUTES = {"reconcile": "reconcile_http", "drift": "drift_http", "runs": "runs_http", "health": "health_http",
          "health/details": "health_details_http", "runs/{pass_id}": "run_http"}  # fmt: skip
# The host routes by method: a function only ever sees its route's own method (others are 404).
METHOD = {"reconcile": "POST"}
PASS_IDS = st.one_of(st.text(max_size=20), st.sampled_from(["0123456789ab", "../x", "%2e%2e", "0" * 12, "A" * 12]))


@pytest.mark.azurite
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, params=PARAMS, route=st.sampled_from(list(ROUTES)), pass_id=PASS_IDS)
@example(body=b'{"dry_run": true}', params={}, route="reconcile", pass_id="")  # a real pass runs too
@example(body=b"", params={"target": A}, route="reconcile", pass_id="")
@example(body=b"", params={}, route="health", pass_id="")
@example(body=b"[" * 10_000, params={}, route="reconcile", pass_id="")
@example(body=b"", params={}, route="runs/{pass_id}", pass_id="0123456789ab")
async def test_http_functions_answer_hostile_requests_with_json_below_500(
    worker: Worker, body: bytes, params: dict[str, str], route: str, pass_id: str
) -> None:
    fn = functions(function_app.app)[ROUTES[route]].get_user_function()
    route_params = {"pass_id": pass_id} if "{pass_id}" in route else {}
    url = f"http://localhost/api/{route.replace('{pass_id}', 'x')}"
    req = func.HttpRequest(METHOD.get(route, "GET"), url, params=params, route_params=route_params, body=body)
    resp: func.HttpResponse = await fn(req)
    assert resp.mimetype == "application/json"
    payload = json.loads(resp.get_body())
    # /api/health answers 503 when the service itself is unhealthy (no pass yet): a verdict, not a fault.
    verdict = route.startswith("health") and resp.status_code == 503 and payload.get("status") == "stale"
    assert resp.status_code < 500 or verdict, resp.get_body()[:500]
    if 400 <= resp.status_code < 500:
        assert "Traceback" not in payload["error"]["message"]
