"""The on-call status page: per target the path picture, open drift with its cause, the last passes
and a drift timeline; and the static files it links to.

Owns the page's content and its HTML (a jinja2 template with autoescaping; pictures from
`picture`; each drift's cause from `causes`, the cards' table). `render` is pure; `gather` reads
the ledger and traces the targets (read-only). Must not know azure.functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import jinja2

from reconciler.causes import root_cause
from reconciler.desired import DesiredState, Target
from reconciler.drift import DriftCode
from reconciler.ledger_state import DriftRecord, PassRecord
from reconciler.picture import Interval, hop_anchor, timeline_svg, trace_svg
from reconciler.runbook import RUNBOOK, names_for
from reconciler.service import Services, trace_targets
from reconciler.trace import Hop, Trace, worst

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
# Served as-is by GET /api/static/{name}; nothing outside this table is ever read.
STATIC_FILES: dict[str, str] = {"status.css": "text/css; charset=utf-8"}
# The page carries no script and loads nothing from elsewhere: it works without internet access.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TIMELINE_DAYS = 7

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class PageData:
    now: datetime
    traces: Sequence[Trace]
    drifts: Sequence[DriftRecord]
    passes: Sequence[PassRecord]
    events: Sequence[Mapping[str, object]]  # ledger history, newest first
    targets: Mapping[str, Target] = field(default_factory=dict)  # the desired targets, by name (runbooks)


def render(data: PageData, static_base: str = "static/") -> str:
    causes = cause_hops(data)
    names = list(dict.fromkeys([t.target for t in data.traces] + [d.target for d in data.drifts]))
    targets = [_target_view(name, data, causes) for name in names]
    intervals = incidents(data.events, data.drifts)
    return _ENV.get_template("status.html").render(
        now=data.now.astimezone(UTC).isoformat(timespec="seconds"),
        targets=targets,
        passes=data.passes,
        timeline=timeline_svg(intervals, data.now, TIMELINE_DAYS),
        days=TIMELINE_DAYS,
        static_base=static_base,
    )


def _target_view(name: str, data: PageData, causes: Mapping[str, Hop]) -> dict[str, Any]:
    traces = [t for t in data.traces if t.target == name]
    verdict = worst(t.verdict for t in traces)
    drifts = []
    for d in sorted((d for d in data.drifts if d.target == name), key=lambda d: (d.severity != "critical", d.identity)):
        cause = causes.get(d.identity)
        drifts.append(
            {
                "identity": d.identity,
                "code": d.code,
                "severity": d.severity,
                "subject": d.subject,
                "first_seen": d.first_seen.isoformat(timespec="seconds"),
                "observed": d.observed,
                "cause": cause.label if cause else "",
                "cause_anchor": hop_anchor(name, cause.id) if cause else "",
                "runbook": _runbook(d.code, names_for(data.targets.get(name), d.subject)),
            }
        )
    return {
        "name": name,
        "verdict": verdict.value if traces else "unknown",
        "traces": traces,
        "pictures": [trace_svg(t) for t in traces],
        "hops": [[_hop_view(name, h) for h in _unique_hops(t)] for t in traces],
        "drifts": drifts,
    }


@dataclass(frozen=True)
class _Open:
    """An open drift as the cause table reads it (reconciler.causes.Fact)."""

    identity: str
    code: DriftCode
    target: str
    subject: str


def cause_hops(data: PageData) -> dict[str, Hop]:
    """Open drift identity -> the hop that shows its root cause.

    The root cause is the cards' (reconciler.causes: what inhibits and groups alerts), found among
    the target's open drift; the hop is the first one of the fresh trace that carries that cause.
    A drift whose cause no hop carries (gone since, or never on a path) is absent from the map.
    """
    hop_of: dict[str, Hop] = {}
    for t in data.traces:
        for p in t.paths:
            for h in p.hops:
                for d in h.drifts:
                    hop_of.setdefault(d.identity, h)
    facts = [
        _Open(d.identity, DriftCode(d.code), d.target, d.subject) for d in data.drifts if d.code in _KNOWN_CODES
    ]
    out: dict[str, Hop] = {}
    for f in facts:
        hop = hop_of.get(root_cause(f, [g for g in facts if g.target == f.target]).identity)
        if hop is not None:
            out[f.identity] = hop
    return out


_KNOWN_CODES = frozenset(c.value for c in DriftCode)  # a stored record may come from an older catalogue


def _runbook(code: str, names: Mapping[str, str]) -> dict[str, str] | None:
    """What to check and how to fix it by hand (reconciler.runbook); None for a code it does not know."""
    try:
        book = RUNBOOK[DriftCode(code)].filled(names)
    except ValueError:
        return None  # a stored record from an older catalogue
    return {"check": book.check, "blade": book.blade, "fix": book.fix}


def _unique_hops(t: Trace) -> list[Hop]:
    seen: dict[str, Hop] = {}
    for p in t.paths:
        for h in p.hops:
            seen.setdefault(h.id, h)
    return list(seen.values())


def _hop_view(target: str, h: Hop) -> dict[str, Any]:
    return {
        "id": h.id,
        "anchor": hop_anchor(target, h.id),
        "label": h.label,
        "verdict": h.verdict.value,
        "evidence": [
            f"{e.read} {e.field}{' [' + e.instance + ']' if e.instance else ''}: {e.value}" for e in h.evidence
        ],
        "codes": sorted({d.code.value for d in h.drifts}),
    }


def incidents(events: Sequence[Mapping[str, object]], open_drifts: Sequence[DriftRecord]) -> list[Interval]:
    """Incidents from the ledger history (opened/resolved events), plus what is open now."""
    intervals: list[Interval] = []
    started: dict[str, tuple[datetime, str, str]] = {}
    for e in sorted(events, key=lambda e: _time(e.get("at"))):
        identity, kind = str(e.get("identity", "")), e.get("kind")
        if not identity:
            continue
        at = _time(e.get("at"))
        if kind == "opened":
            started[identity] = (at, str(e.get("code", "")), str(e.get("severity", "")))
        elif kind == "resolved":
            start, code, severity = started.pop(identity, (at, str(e.get("code", "")), str(e.get("severity", ""))))
            intervals.append(Interval(identity, code, severity, start, at))
    for d in open_drifts:
        start = started.pop(d.identity, (d.first_seen, d.code, d.severity))[0]
        intervals.append(Interval(d.identity, d.code, d.severity, min(start, d.first_seen), None))
    return intervals


def _time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def static_file(name: str) -> tuple[bytes, str] | None:
    """A static asset by its exact name, or None: never a path built from the request."""
    mimetype = STATIC_FILES.get(name)
    if mimetype is None:
        return None
    return (STATIC_DIR / name).read_bytes(), mimetype


# ---- gathering (I/O through the ports it is given) ------------------------------------------------


class LedgerReader(Protocol):
    async def open_drifts(self, target: str | None = None, severity: str | None = None) -> list[DriftRecord]: ...
    async def passes(self, limit: int = 20, target: str | None = None) -> list[PassRecord]: ...
    async def history(self, target: str | None = None, limit: int = 50) -> list[dict[str, object]]: ...


async def gather(
    services: Services, ledger: LedgerReader | None, state: DesiredState, *, now: datetime, target: str | None = None
) -> PageData:
    """Trace the targets from a fresh observation and read the ledger (without one: empty tables)."""
    traces = await trace_targets(services, state, only=target)
    targets = {t.name: t for t in state.targets}
    if ledger is None:
        return PageData(now, traces, [], [], [], targets)
    drifts = await ledger.open_drifts(target=target)
    passes = await ledger.passes(limit=10, target=target)
    events = await ledger.history(target=target, limit=1000)
    return PageData(now, traces, drifts, passes, events, targets)
