"""The pass report's values: a target's status is a closed set, and its JSON is the plain word."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reconciler.service import PassReport, TargetReport, TargetStatus
from reconciler.trigger import Trigger


def test_a_target_status_outside_the_closed_set_is_refused() -> None:
    with pytest.raises(ValueError, match="'stale'"):
        TargetReport("hub", status="stale")  # type: ignore[arg-type]


def test_a_locked_target_counts_as_locked_and_fails_the_exit_code_in_plain_json() -> None:
    report = PassReport("0123456789ab", Trigger.TIMER, datetime.now(UTC), dry_run=False)
    report.targets = [TargetReport("hub-a", status="locked"), TargetReport("hub-b")]  # type: ignore[arg-type]
    assert report.targets[0].status is TargetStatus.LOCKED
    assert report.counts()["locked"] == 1 and report.exit_code == 1
    body = json.loads(json.dumps(report.to_dict()))
    assert [t["status"] for t in body["targets"]] == ["locked", "ok"]
    assert type(report.to_dict()["targets"][0]["status"]) is str
