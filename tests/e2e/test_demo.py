"""The README's demo command runs the whole story and exits 0 (a regression here breaks the first thing a newcomer types)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_tells_the_whole_story_and_saves_the_cards(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert out.rstrip().endswith("=== Done.")
    assert out.count("fixed: agent_intent nva1") == 3
    assert "left alone (policy: Azure-side writes are off" in out
    assert "HTTP 404" in out and "HTTP 405" not in out and "HTTP 500" not in out
    cards = sorted((tmp_path / "cards").glob("*.json"))
    kinds = [json.loads(c.read_text())["attachments"][0]["content"]["version"] for c in cards]
    assert kinds and set(kinds) == {"1.4"}
