"""The local Functions host shim's routing and the Teams receiver's life cycle, on a tiny app of their own.

The shim must route as the host does (by path *and* method; anything no route takes is an empty 404,
never a 405 and never the function), check function keys per auth level, give the function the
query and route values, and answer 500 without a traceback when a function raises. test_functions.py
checks the same over the real app with Azurite; this pins the rules without storage.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
import pytest

from localenv.host import LocalHost, route_prefix
from localenv.webhook import WebhookReceiver, hang

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
CALLS: list[str] = []


@app.function_name("thing")
@app.route(route="things/{id}", methods=["GET"])
async def thing(req: func.HttpRequest) -> func.HttpResponse:
    CALLS.append("thing")
    body = {"route": dict(req.route_params), "params": dict(req.params), "method": req.method}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.function_name("anon")
@app.route(route="anon", auth_level=func.AuthLevel.ANONYMOUS)  # no methods: the host's default set
async def anon(req: func.HttpRequest) -> func.HttpResponse:
    CALLS.append("anon")
    return func.HttpResponse(req.method, status_code=200)


@app.function_name("boom")
@app.route(route="boom", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def boom(req: func.HttpRequest) -> func.HttpResponse:
    CALLS.append("boom")
    raise RuntimeError("a secret detail that must stay in the log")


@app.function_name("tick")
@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
async def tick(timer: func.TimerRequest) -> None:
    CALLS.append("tick")


@pytest.fixture
def host() -> Iterator[LocalHost]:
    CALLS.clear()
    with LocalHost(app, key="k1") as h:
        yield h


def call(host: LocalHost, method: str, path: str, key: str | None = "k1") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(urlsplit(host.url).netloc, timeout=30)
    try:
        conn.request(method, path, headers={"x-functions-key": key} if key else {})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_a_route_takes_its_methods_and_anything_else_is_an_empty_404(host: LocalHost) -> None:
    status, body, head = call(host, "GET", "/api/things/7?a=1&a=2&b=")
    assert status == 200 and head["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"route": {"id": "7"}, "params": {"a": "2", "b": ""}, "method": "GET"}
    assert CALLS == ["thing"]
    # Route values arrive decoded as the host decodes the path: all but an encoded `/`.
    for raw, value in (("a%20b", "a b"), ("a%2Fb", "a%2Fb"), ("%C3%A9", "é"), ("a%252Fb", "a%2Fb")):
        status, body, _ = call(host, "GET", f"/api/things/{raw}")
        assert (status, json.loads(body)["route"]) == (200, {"id": value}), raw
    CALLS.clear()
    # HEAD on a GET route is a 404 on the host too (Azure/azure-functions-host#11625), like any
    # method the route does not take (#10098): no 405, no body, and the function never runs.
    for method in ("HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        assert call(host, method, "/api/things/7")[:2] == (404, b""), method
    for path in ("/api/things/7/", "/api/things", "/api/nothing", "/things/7"):
        assert call(host, "GET", path)[:2] == (404, b""), path
    assert CALLS == []
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):  # a route without methods takes these
        assert call(host, method, "/api/anon", key=None)[:2] == (200, method.encode())


def test_function_level_routes_need_the_key_in_the_header_or_the_query(host: LocalHost) -> None:
    assert call(host, "GET", "/api/things/1", key=None)[0] == 401
    assert call(host, "GET", "/api/things/1", key="wrong")[0] == 401
    assert call(host, "GET", "/api/things/1?code=wrong", key=None)[0] == 401
    assert call(host, "GET", "/api/things/1?code=k1", key=None)[0] == 200
    assert call(host, "GET", "/api/anon", key=None)[0] == 200  # ANONYMOUS: no key needed
    assert CALLS == ["thing", "anon"]


def test_a_raising_function_is_a_500_without_its_message(host: LocalHost) -> None:
    status, body, head = call(host, "POST", "/api/boom", key=None)
    assert status == 500 and head["content-type"] == "application/json"
    assert json.loads(body) == {"error": {"code": "internal", "message": "function raised"}}


def test_the_admin_endpoint_fires_a_timer_and_refuses_the_rest(host: LocalHost) -> None:
    assert call(host, "POST", "/admin/functions/tick")[:2] == (202, b"")
    assert CALLS == ["tick"]
    assert call(host, "POST", "/admin/functions/nope")[:2] == (404, b"")
    assert call(host, "GET", "/admin/functions/tick")[:2] == (404, b"")
    status, body, _ = call(host, "POST", "/admin/functions/thing")
    assert status == 400 and json.loads(body)["error"]["code"] == "not_invokable"
    host.fire_timer()
    assert CALLS == ["tick", "tick"]


def test_the_receiver_stops_at_once_while_a_request_hangs_and_that_request_gets_no_answer() -> None:
    hook = WebhookReceiver().start()
    hook.script(hang(60))
    outcome: list[Any] = []

    def post() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(hook.url, data=b"{}"), timeout=60) as resp:
                outcome.append(resp.status)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            outcome.append(exc)

    client = threading.Thread(target=post)
    client.start()
    assert [r.status for r in hook.wait_for(1)] == [None]  # arrived; hanging
    started = time.monotonic()
    hook.stop()
    assert time.monotonic() - started < 5
    client.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome  # dropped, never answered


def test_run_on_the_worker_loop_refuses_at_once_instead_of_waiting_for_itself(host: LocalHost) -> None:
    async def nested() -> str:
        async def inner() -> str:
            return "never"

        try:
            return host.run(inner())
        except RuntimeError as exc:
            return str(exc)

    started = time.monotonic()
    assert "would wait for itself" in host.run(nested())
    assert time.monotonic() - started < 5  # not the function timeout


@pytest.mark.parametrize(("http", "prefix"), [(None, "api"), ({}, "api"), ({"routePrefix": ""}, ""),
                                              ({"routePrefix": "/v1/"}, "v1")])
def test_the_route_prefix_comes_from_host_json(tmp_path: Path, http: dict[str, str] | None, prefix: str) -> None:
    doc: dict[str, Any] = {"version": "2.0", "extensions": {} if http is None else {"http": http}}
    (tmp_path / "host.json").write_text(json.dumps(doc))
    assert route_prefix(tmp_path / "host.json") == prefix
    assert route_prefix() == "api"  # ours


def test_the_receiver_records_a_body_far_over_what_teams_takes(webhook: WebhookReceiver) -> None:
    big = b"x" * (3 * 1024 * 1024)
    with urllib.request.urlopen(urllib.request.Request(webhook.url, data=big), timeout=30) as resp:
        assert resp.status == 202
    [got] = webhook.requests()
    assert len(got.body) == len(big)
