"""The README's demo command runs the whole story and exits 0 (a regression here breaks the first thing a newcomer types)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


DEMO = ["-m", "localenv.demo"]  # what `make demo` and the README run


def test_the_readme_and_the_makefile_name_this_demo_command() -> None:
    assert ".venv/bin/python " + " ".join(DEMO) in (ROOT / "README.md").read_text()
    assert "$(BIN)/python " + " ".join(DEMO) + "\n" in (ROOT / "Makefile").read_text()


def test_demo_tells_the_whole_story_and_saves_the_cards(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, *DEMO, "--out", str(tmp_path)],
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
