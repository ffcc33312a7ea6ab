"""The async request-reply rules of HTTP runs (http_api) and the run message on the fan-out queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reconciler import http_api as api
from reconciler.fanout import BadMessage, FanoutMessage, parse_message
from reconciler.trigger import Trigger

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
RUN = {"pass_id": "0123456789ab", "status": "running", "requested_at": T0, "dry_run": True, "target": None,
       "http_status": None, "report": {}}  # fmt: skip


def test_a_running_pass_is_202_with_where_and_when_to_poll() -> None:
    resp = api.run_response("0123456789ab", RUN)
    assert resp.status == 202
    assert resp.headers == {"Location": "/api/runs/0123456789ab", "Retry-After": str(api.RETRY_AFTER_S)}
    assert resp.body["status"] == "running" and resp.body["status_url"] == "/api/runs/0123456789ab"
    assert "report" not in resp.body


def test_a_finished_pass_answers_what_the_post_would_have() -> None:
    done = {**RUN, "status": "done", "http_status": 409, "report": {"pass_id": "0123456789ab", "targets": []}}
    resp = api.run_response("0123456789ab", done)
    assert (resp.status, resp.body) == (409, done["report"])


@pytest.mark.parametrize("pass_id", ["", "x", "0123456789AB", "0123456789abc", "../etc/passwd", "0123456789a/"])
def test_anything_but_a_pass_id_is_404(pass_id: str) -> None:
    with pytest.raises(api.ApiError) as info:
        api.parse_run(pass_id, {})
    assert (info.value.status, info.value.code) == (404, "unknown_run")


def test_an_unknown_run_is_404_and_query_fields_are_refused() -> None:
    with pytest.raises(api.ApiError) as info:
        api.run_response("0123456789ab", None)
    assert info.value.status == 404
    with pytest.raises(api.ApiError) as info:
        api.parse_run("0123456789ab", {"wait": "1"})
    assert info.value.status == 400
    assert api.parse_run("0123456789ab", {"code": "function-key"}) == "0123456789ab"


def test_a_run_message_round_trips_and_a_timer_message_is_unchanged() -> None:
    run = FanoutMessage(None, T0, origin=Trigger.HTTP, run="0123456789ab", dry_run=True)
    assert parse_message(run.to_json()) == run
    timer = FanoutMessage("hub-a", T0)
    assert set(json.loads(timer.to_json())) == {"v", "target", "tick", "origin"}
    assert parse_message(timer.to_json()) == timer


def test_a_message_origin_is_one_of_the_triggers_and_comes_back_as_one() -> None:
    body = '{"v":1,"target":"hub-a","tick":"2026-11-25T08:00:00+00:00","origin":"cron"}'
    with pytest.raises(BadMessage, match="origin 'cron' is not one of"):
        parse_message(body)
    assert parse_message(body.replace("cron", "event")).origin is Trigger.EVENT


@pytest.mark.parametrize(
    "body",
    [
        '{"v":1,"target":null,"tick":"2026-11-25T08:00:00+00:00"}',  # all targets only for a run
        '{"v":1,"target":"hub-a","tick":"2026-11-25T08:00:00+00:00","dry_run":true}',  # dry run only for a run
        '{"v":1,"target":"hub-a","tick":"2026-11-25T08:00:00+00:00","run":"nope"}',
        '{"v":1,"target":"hub-a","tick":"2026-11-25T08:00:00+00:00","run":"0123456789ab","dry_run":"yes"}',
    ],
)
def test_bad_run_messages_are_poison_at_once(body: str) -> None:
    with pytest.raises(BadMessage):
        parse_message(body)
