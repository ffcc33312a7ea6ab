"""What must hold after every pass of the reliability tests, whatever the fault: the report, the
ledger and the Teams cards tell one story.

- no target ends with an `internal` error (a bug, not a fault of the world);
- every pass has its pass record, listing its targets and the step counts the report shows (while
  storage is up, or once the same worker has written it after storage came back);
- every step outcome of every target is in the ledger's history under that pass, with the outcome
  the report shows;
- every card the pass queued for Teams shows, for a drift a step acted on, that step's outcome.

It must not decide what a single test expects; each test still asserts its own story.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from reconciler.composition import Runtime
from reconciler.outbox import idempotency_key
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
    """Every card a pass queued shows its steps' outcomes; returns how many cards were checked."""
    alerts = rt.services.alerts
    if alerts is None:
        return 0
    checked = 0
    for r in reports:
        for t in r.targets:
            outcome_of = {_short_id(i): o.outcome.value for o in t.outcomes for i in o.step.fixes}
            key = idempotency_key(r.pass_id, t.target)
            cards = [e for e in await alerts.store.entries(t.target) if e.idempotency_key == key]
            for entry in cards:
                checked += 1
                for item_id, facts in _alert_items(json.loads(entry.payload)):
                    shown = facts.get("Outcome")
                    if shown is not None and item_id in outcome_of:
                        assert shown == outcome_of[item_id], (
                            f"pass {r.pass_id} target {t.target}: card says {shown}, report {outcome_of[item_id]}"
                        )
    return checked


async def all_agree(rt: Runtime, reports: Iterable[PassReport]) -> None:
    reports = list(reports)
    await ledger_agrees(rt, reports)
    await cards_agree(rt, reports)


def _short_id(identity: str) -> str:
    # The id cards.py gives an alert's container (`alert-<sha256[:12]>`).
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _alert_items(message: dict[str, Any]) -> Iterable[tuple[str, dict[str, str]]]:
    for attachment in message.get("attachments", []):
        for element in attachment.get("content", {}).get("body", []):
            element_id = str(element.get("id", ""))
            if not element_id.startswith("alert-"):
                continue
            facts: dict[str, str] = {}
            for item in element.get("items", []):
                if item.get("type") == "FactSet":
                    facts.update({f["title"]: f["value"] for f in item.get("facts", [])})
            yield element_id.removeprefix("alert-"), facts


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
