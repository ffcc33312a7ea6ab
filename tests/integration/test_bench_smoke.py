"""The fleet benchmark's smoke mode runs end to end and produces sane figures (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fleet

pytestmark = pytest.mark.azurite


def test_smoke_run_observes_every_hub_and_writes_its_results(tmp_path: Path) -> None:
    # Two baseline hubs instead of the smoke's three: the baseline is sequential, ~5 s a hub.
    assert fleet.main(["--smoke", "--baseline-targets", "2", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "fleet.json").read_text())
    [run] = results["runs"]
    assert run["n"] == 10
    assert run["unknown_reads"] == 0 and run["targets_in_error"] == []
    assert run["drift_as_expected"] and run["targets_with_drift"] == ["hub-0003"]
    # Both sides of the wire agree on the count; 10 hubs cannot exhaust a 250-read bucket.
    assert run["arm_requests"] == run["arm_requests_client"]
    assert run["arm_429"] == 0
    assert run["arm_requests_per_target"] <= 15
    assert run["ledger_transactions"] >= 10 + 1  # a partition read per hub, the pass record
    assert run["lower_bound_s"] == max(run["throttle_bound_s"], run["critical_path_s"]) > 0
    assert run["wall_s"] > 0 and run["ratio"] == pytest.approx(run["wall_s"] / run["lower_bound_s"])
    assert 0 < run["peak_rss_mb"] < 1000
    # CPU of the pass process, and per ARM request.
    assert run["cpu_s"] > 0 and run["cpu_ms_per_request"] == pytest.approx(1000 * run["cpu_s"] / run["arm_requests"])
    # The zero-CPU schedule: the same requests as the emulator counted, never below the bound, and
    # the two request lanes never later than first come first served.
    assert run["floor_model_matches"], (run["floor_by_op"], run["arm_by_op"])
    assert run["lower_bound_s"] <= run["floor_s"] <= run["floor_fifo_s"]
    assert len(results["machine"]["load_at_start"]) == 3

    base = results["baseline"]
    assert base["targets_checked"] == 2 and base["scaled"]
    assert base["drift_as_expected"]
    assert base["arm_requests_per_target"] > run["arm_requests_per_target"]
    assert results["speedup_vs_baseline_at_10"] > 0

    assert (tmp_path / "fleet.svg").stat().st_size > 1000
    assert "| 10 |" in (tmp_path / "README-table.md").read_text()


def test_the_base_revision_is_exported_whole_and_removed_after() -> None:
    base = fleet.BaseRevision("HEAD")
    try:
        assert len(base.commit) == 40
        assert (base.tree / "bench" / "fleet.py").exists() and (base.tree / "reconciler" / "arm.py").exists()
        assert (base.tree / "tools" / "node_modules").resolve() == (fleet.ROOT / "tools" / "node_modules").resolve()
    finally:
        base.close()
    assert not base.tree.exists()
