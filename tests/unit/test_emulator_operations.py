"""The emulator's long-running operations without HTTP: the four 202 styles, completion, the bounded store."""

from __future__ import annotations

import json

import pytest

from emulator import Fault, World, operations
from emulator.operations import LRO_STYLES, Operations
from tests.fixtures.emulator import REFERENCE_LAB

BASE = "https://emu/subscriptions/sub-1/providers/Microsoft.Network/locations/westeurope"


def store(polls: int = 0) -> Operations:
    return Operations(World.load(REFERENCE_LAB), lambda sub: BASE, polls=polls, seconds=0.0)


def op_id(url: str) -> str:
    return url.split("?")[0].rsplit("/", 1)[1]


@pytest.mark.parametrize(
    ("style", "headers"),
    [
        ("location", {"Location", "Retry-After"}),
        ("azure-async-operation", {"Azure-AsyncOperation", "Retry-After"}),
        ("both", {"Location", "Azure-AsyncOperation", "Retry-After"}),
        ("status-properties", {"Azure-AsyncOperation", "Retry-After"}),
    ],
)
def test_each_style_points_at_its_status_with_its_headers(style: str, headers: set[str]) -> None:
    resp = store().start_query("sub-1", ("hub",), style, None, {"value": [1]}, {})
    assert resp.status == 202 and set(resp.headers) == headers
    assert style in LRO_STYLES


def test_status_properties_carries_the_result_in_the_final_status_body() -> None:
    ops = store()
    resp = ops.start_query("sub-1", ("hub",), "status-properties", None, {"value": [1]}, {})
    final = ops.poll("sub-1", op_id(resp.headers["Azure-AsyncOperation"]), status_url=True)
    assert json.loads(final.body) == {"status": "Succeeded", "properties": {"value": [1]}}


def test_a_query_is_in_progress_for_its_poll_rounds_then_done() -> None:
    ops = store(polls=2)
    resp = ops.start_query("sub-1", ("hub",), "both", None, {"value": [1]}, {})
    oid = op_id(resp.headers["Location"])
    answers = [ops.poll("sub-1", oid, status_url=False).status for _ in range(3)]
    assert answers == [202, 202, 200]


def test_an_empty_instances_fault_answers_the_empty_result() -> None:
    ops = store()
    resp = ops.start_query("sub-1", ("hub",), "location", Fault.empty_instances(), {"value": [1]}, {"value": []})
    assert json.loads(ops.poll("sub-1", op_id(resp.headers["Location"]), status_url=False).body) == {"value": []}


def test_a_puts_world_change_lands_when_its_operation_completes() -> None:
    ops = store(polls=1)
    done: list[str] = []
    resp = ops.start_update("sub-1", ("hub",), {"name": "hub"}, lambda: done.append("Succeeded"))
    oid = op_id(resp.headers["Azure-AsyncOperation"])
    assert resp.status == 201 and done == []
    ops.poll("sub-1", oid, status_url=True)
    assert done == []
    ops.poll("sub-1", oid, status_url=True)
    ops.poll("sub-1", oid, status_url=True)
    assert done == ["Succeeded"]  # once, however often the client polls after


def test_the_store_stays_bounded_for_queries_and_puts_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "MAX_OPERATIONS", 4)
    puts, queries = store(), store()
    for _ in range(10):
        puts.start_update("sub-1", ("hub",), {}, lambda: None)
        queries.start_query("sub-1", ("hub",), "both", None, {}, {})
    assert len(puts._ops) <= 4 and len(queries._ops) <= 4  # PUTs were unbounded before the split


def test_an_unknown_operation_is_arms_404() -> None:
    resp = store().poll("sub-1", "nope", status_url=True)
    assert resp.status == 404 and json.loads(resp.body)["error"]["code"] == "OperationNotFound"
