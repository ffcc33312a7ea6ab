"""The terminal text of a report, a trace and ledger rows: untrusted text stays inert.

Names, AS paths, error messages and the changer's display name come from Azure, an agent or an
event's claims; printed raw, an escape sequence in one could recolour the terminal, clear it, plant
an OSC 8 hyperlink, reorder the line (bidi) or print a fake line of its own.
"""

from __future__ import annotations

import io
from typing import Any

from reconciler.report_text import inert, render_report, render_trace, table

HOSTILE = "nva1\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07\x1b[2J\u202egnp.exe\n  fixed: a fake line\ud800"


def _report() -> dict[str, Any]:
    drift = {
        "code": "PEER_UNEXPECTED",
        "severity": "critical",
        "subject": f"peer={HOSTILE}",
        "expected": None,
        "observed": HOSTILE,
    }
    return {
        "pass_id": "p1", "trigger": "cli", "dry_run": False, "duration_s": 0.5, "errors": [],
        "counts": {"targets": 1, "drifts": 1, "steps": 1, "fixed": 0},
        "targets": [{
            "target": "t1", "status": "drift", "changed_by": {"text": HOSTILE},
            "drifts": [drift], "remaining": [drift],
            "plan": {"steps": [HOSTILE], "notes": [HOSTILE], "skipped": []},
            "outcomes": [{"outcome": "failed", "step": HOSTILE, "detail": HOSTILE}],
            "errors": [{"stage": "observe", "message": HOSTILE}],
        }],
    }  # fmt: skip


def _assert_inert(text: str) -> None:
    for bad in ("\x1b", "\x07", "\u202e", "\ud800"):
        assert bad not in text, repr(bad)
    assert "\n  fixed: a fake line" not in text  # no line of its own
    assert "\\x1b" in text and "\\u202e" in text  # shown, not silently dropped: on-call sees it is odd


def test_a_report_prints_untrusted_text_inert() -> None:
    out = io.StringIO()
    render_report(_report(), out)
    text = out.getvalue()
    _assert_inert(text)
    assert text.startswith("pass p1") and "\n[t1] DRIFT\n" in text  # our own layout is unchanged


def test_a_trace_and_a_table_print_untrusted_text_inert() -> None:
    trace = {"target": "t1", "prefix": "0.0.0.0/0", "verdict": "broken", "paths": [{
        "source_kind": "nic", "source": HOSTILE, "verdict": "broken", "root_cause": "h1",
        "hops": [{"id": "h1", "verdict": "broken", "label": HOSTILE, "drifts": [{"code": "ROUTE_MISSING"}],
                  "evidence": [{"read": "arm", "field": "routes", "instance": HOSTILE, "value": HOSTILE}]}],
    }]}  # fmt: skip
    out = io.StringIO()
    render_trace(trace, out)
    table(out, "Open drift", [{"target": "t1", "changed_by": HOSTILE}], ["target", "changed_by"])
    _assert_inert(out.getvalue())


def test_inert_leaves_ordinary_text_alone() -> None:
    plain = "peer=nva1/instance=IN_0 · 10.0.0.0/8 — café"
    assert inert(plain) == plain
