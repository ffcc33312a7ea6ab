"""The human text form of a pass report, a trace and ledger rows: what an operator reads in a terminal.

Owns layout (a report's dict form in, lines out) and making what it prints inert for a terminal
(`inert`: names, AS paths, messages and claims come from Azure, agents and events). Must not decide,
read state or do I/O beyond writing to the stream it is given; the CLI and the local demo both print
through it.
"""

from __future__ import annotations

from typing import Any, TextIO


def inert(text: object) -> str:
    """`text` safe to print on a terminal: every control, format (bidi), separator other than the
    space, or lone surrogate character shown as its escape (`\\x1b`, `\\u202e`, `\\n`), so text from
    Azure or an agent cannot send escape sequences (colour, clear, OSC 8 links), reorder a line
    (CVE-2021-42574) or start a line of its own. Printable text is returned unchanged."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in s)


def _say(out: TextIO, line: str) -> None:
    """Print one line of the layout; everything printed goes through here."""
    print(inert(line), file=out)


def render_report(report: dict[str, Any], out: TextIO) -> None:
    c = report["counts"]
    mode = "dry run" if report["dry_run"] else "apply"
    _say(
        out,
        f"pass {report['pass_id']} ({report['trigger']}, {mode}) in {report['duration_s']:.2f} s: "
        f"{c['targets']} target(s), {c['drifts']} drift(s), {c['steps']} step(s), {c['fixed']} fixed",
    )
    for t in report["targets"]:
        out.write("\n")
        _say(out, f"[{t['target']}] {t['status'].upper()}")
        if t.get("changed_by"):
            _say(out, f"  changed by {t['changed_by']['text']}")
        rows = [
            {
                "code": d["code"],
                "severity": d["severity"],
                "subject": d["subject"],
                "expected": d["expected"],
                "observed": d["observed"],
            }
            for d in t["drifts"]
        ]
        if rows:
            table(out, "drift found", rows, ["code", "severity", "subject", "expected", "observed"])
        else:
            _say(out, "  no drift")
        for s in t["plan"]["steps"]:
            _say(out, f"  plan: {s}")
        for n in t["plan"]["notes"]:
            _say(out, f"  note: {n}")
        skipped: dict[str, list[str]] = {}
        for s in t["plan"]["skipped"]:
            skipped.setdefault(s["reason"], []).append(s["identity"].split("|", 2)[1])
        for reason, codes in skipped.items():
            _say(out, f"  left alone ({reason}): {', '.join(sorted(set(codes)))}")
        for o in t["outcomes"]:
            _say(out, f"  {o['outcome']}: {o['step']} — {o['detail']}")
        if not report["dry_run"] and t["outcomes"]:
            _say(out, f"  still drifting after apply: {len(t['remaining'])}")
        for e in t["errors"]:
            _say(out, f"  ERROR [{e['stage']}]: {e['message']}")
    for e in report["errors"]:
        _say(out, f"ERROR [{e['stage']}]: {e['message']}")


def table(out: TextIO, title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    _say(out, f"  {title}:")
    if not rows:
        _say(out, "    (none)")
        return
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [min(72, max(len(c), *(len(row[i]) for row in cells))) for i, c in enumerate(cols)]
    _say(out, "    " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        _say(out, "    " + "  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(v: Any) -> str:
    return inert(_cell_text(v))  # inert before measuring: an escape widens the cell


def _cell_text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return "; ".join(str(x) for x in v) or "-"
    return str(v)


def render_trace(t: dict[str, Any], out: TextIO) -> None:
    """One block per path: the hops in order with their evidence; the root cause is marked with >."""
    _say(out, f"[{t['target']}] {t['prefix']}: {t['verdict'].upper()}")
    for p in t["paths"]:
        src = {"onprem": "on-premises", "subnet": "subnet", "nic": "NIC"}.get(p["source_kind"], p["source_kind"])
        cause = f" (root cause: {p['root_cause']})" if p["root_cause"] else ""
        _say(out, f"  from {src} {p['source']}: {p['verdict'].upper()}{cause}")
        for i, h in enumerate(p["hops"], 1):
            mark = ">" if h["id"] == p["root_cause"] else " "
            codes = sorted({d["code"] for d in h["drifts"]})
            tail = f"  [{', '.join(codes)}]" if codes else ""
            _say(out, f"  {mark}{i:>2}. {h['verdict']:<8} {h['label']}{tail}")
            for e in h["evidence"]:
                where = f" [{e['instance']}]" if e["instance"] else ""
                _say(out, f"                {e['read']} {e['field']}{where}: {e['value']}")
