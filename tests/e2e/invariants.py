"""What must hold after every pass of the reliability tests, whatever the fault: the report, the
ledger and the Teams cards tell one story.

- no target ends with an `internal` error (a bug, not a fault of the world);
- every pass has its pass record, listing its targets and the step counts the report shows (while
  storage is up, or once the same worker has written it after storage came back);
- every step outcome of every target is in the ledger's history under that pass, with the outcome
  the report shows;
- every card the pass queued for Teams tells a step's outcome as the report does.

It must not decide what a single test expects; each test still asserts its own story.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from reconciler.composition import Runtime
from reconciler.service import PassReport, TargetReport

STEP_COUNTS = ("steps", "fixed", "failed", "deferred")


def no_internal_errors(report: PassReport) -> None:
    internal = [(t.target, m) for t in report.targets for s, m in t.errors if s == "internal"]
    internal += [("pass", m) for s, m in report.errors if s == "internal"]
    assert not internal, f"pass {report.pass_id}: internal errors {internal}"


def _acted(t: TargetReport) -> bool:
    """The target's pass reached its ledger write (not locked, lease and ledger reachable)."""
    return t.status != "locked" and not any(s in ("lease", "ledger") for s, _ in t.errors)


async def ledger_agrees(rt: Runtime, reports: Iterable[PassReport]) -> None:
    """Pass records and history agree with the reports (call with storage up)."""
    reports = [r for r in reports if not r.dry_run]
    recorded = {p.pass_id: p for p in await rt.ledger.passes(limit=5000)}
    for r in reports:
        no_internal_errors(r)
        rec = recorded.get(r.pass_id)
        assert rec is not None, f"pass {r.pass_id} has no pass record (errors: {r.errors})"
        assert sorted(rec.targets) == sorted(t.target for t in r.targets), (rec, r.to_dict())
        counts = r.counts()
        assert {k: rec.counts.get(k) for k in STEP_COUNTS} == {k: counts[k] for k in STEP_COUNTS}, (rec, counts)
    for name in sorted({t.target for r in reports for t in r.targets}):
        history = await rt.ledger.history(target=name, limit=5000)
        acted = {(str(h.get("pass_id")), str(h["identity"]), str(h["outcome"])) for h in history if h["kind"] == "action"}
        for r in reports:
            for t in r.targets:
                if t.target != name or not _acted(t):
                    continue
                assert t.ledger, f"pass {r.pass_id} target {name}: no ledger record ({t.to_dict()})"
                for o in t.outcomes:
                    for identity in o.step.fixes:
                        want = (r.pass_id, identity, o.outcome.value)
                        assert want in acted, f"pass {r.pass_id} target {name}: {want} not in the ledger's history"


async def cards_agree(rt: Runtime, reports: Iterable[PassReport]) -> int:
    """Every card a pass queued tells its steps' outcomes as the report does.

    An incident card says what the reconciler did about its cause ("Ran <step>: <outcome>", or
    "Fixed it: <step> (<outcome>)" once resolved): that outcome must be the report's outcome of a
    step of the same pass fixing one of the drifts the card announces. A "fixed automatically"
    notice may only list steps the report says fixed. Returns how many statements were compared.
    """
    alerts = rt.services.alerts
    if alerts is None:
        return 0
    compared = 0
    for r in reports:
        for t in r.targets:
            outcome_of = {i: o.outcome.value for o in t.outcomes for i in o.step.fixes}
            fixed_steps = {_plain(o.step.describe()) for o in t.outcomes if o.outcome.value == "fixed"}
            for entry in await alerts.store.entries(t.target):
                message = json.loads(entry.payload)
                if _fact(message, "Pass") != r.pass_id:
                    continue
                where = f"pass {r.pass_id} target {t.target}"
                shown = _outcome_said(_text_of(message, "did"))
                if shown is not None:
                    acted = {outcome_of[i] for i in entry.announces if i in outcome_of}
                    assert shown in acted, f"{where}: card says {shown!r}, report says {sorted(acted)}"
                    compared += 1
                if _text_of(message, "kind").startswith("FIXED AUTOMATICALLY"):
                    by = {_plain(v) for v in _facts(message, "By")}
                    assert by and by <= fixed_steps, f"{where}: notice lists {by}, report fixed {fixed_steps}"
                    compared += 1
    return compared


async def all_agree(rt: Runtime, reports: Iterable[PassReport]) -> None:
    reports = list(reports)
    await ledger_agrees(rt, reports)
    await cards_agree(rt, reports)


async def report_dicts_agree(rt: Runtime, reports: Iterable[dict[str, Any]]) -> None:
    """`ledger_agrees` for reports that arrived as JSON (the HTTP function's answer)."""
    reports = [r for r in reports if not r["dry_run"]]
    recorded = {p.pass_id for p in await rt.ledger.passes(limit=5000)}
    for r in reports:
        internal = [(t["target"], e) for t in r["targets"] for e in t["errors"] if e["stage"] == "internal"]
        assert not internal, f"pass {r['pass_id']}: internal errors {internal}"
        assert r["pass_id"] in recorded, f"pass {r['pass_id']} has no pass record"
    for name in sorted({t["target"] for r in reports for t in r["targets"]}):
        history = await rt.ledger.history(target=name, limit=5000)
        acted = {(str(h.get("pass_id")), str(h["identity"]), str(h["outcome"])) for h in history if h["kind"] == "action"}
        for r in reports:
            for t in r["targets"]:
                if t["target"] != name or t["status"] == "locked" or any(
                    e["stage"] in ("lease", "ledger") for e in t["errors"]
                ):
                    continue
                for o in t["outcomes"]:
                    for identity in o["fixes"]:
                        want = (r["pass_id"], identity, o["outcome"])
                        assert want in acted, f"pass {r['pass_id']} target {name}: {want} not in the ledger's history"


def _elements(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _elements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _elements(value)


def _text_of(message: dict[str, Any], element_id: str) -> str:
    return next((str(e.get("text", "")) for e in _elements(message) if e.get("id") == element_id), "")


def _facts(message: dict[str, Any], title: str) -> list[str]:
    return [str(f["value"]) for e in _elements(message) if e.get("type") == "FactSet"
            for f in e.get("facts", []) if f.get("title") == title]  # fmt: skip


def _fact(message: dict[str, Any], title: str) -> str | None:
    found = _facts(message, title)
    return found[0] if found else None


def _outcome_said(did: str) -> str | None:
    if m := re.fullmatch(r"Ran .*: (\w+)", did):
        return m.group(1)
    if m := re.fullmatch(r"Fixed it: .* \((\w+)\)", did):
        return m.group(1)
    return None


def _plain(text: str) -> str:
    """Card text without the markdown escapes cards.untrusted adds."""
    return re.sub(r"\\(.)", r"\1", text)
