"""The time-to-repair benchmark's smoke mode runs end to end through events and the timer and
writes its results (no timing asserts: the figures are the bench's, not a test's)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import time_to_repair

pytestmark = pytest.mark.azurite


def test_smoke_run_measures_both_modes_and_writes_results(tmp_path: Path) -> None:
    assert time_to_repair.main(["--smoke", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "time_to_repair.json").read_text())
    results = doc["results"]
    assert set(results) == set(time_to_repair.SMOKE)
    for name, row in results.items():
        for mode in ("events", "timer"):
            for metric, stats in row[mode].items():
                assert stats["missed"] == 0, f"{name} {mode} {metric} never happened"
                assert stats["p50"] > 0
    assert (tmp_path / "time_to_repair.png").stat().st_size > 1000
    assert "| next-hop-lost | nva | break → fixed |" in (tmp_path / "time_to_repair-table.md").read_text()


@pytest.mark.frr
def test_lab_smoke_run_repairs_a_real_frr_break_in_both_modes(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not Path("/usr/lib/frr/bgpd").exists():
        pytest.skip("the FRR lab needs root and Debian frr")
    assert time_to_repair.main(["--lab", "--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "time_to_repair-lab.json").read_text())["results"]
    assert set(results) == set(time_to_repair.LAB_SMOKE)
    for name, row in results.items():
        for mode in ("events", "timer"):
            for metric, stats in row[mode].items():
                assert stats["missed"] == 0, f"{name} {mode} {metric} never happened on real FRR"
    assert (tmp_path / "time_to_repair-lab.png").stat().st_size > 1000
