"""The human text form of a pass report, a trace and ledger rows: what an operator reads in a terminal.

Owns layout only (a report's dict form in, lines out). Must not decide, read state or do I/O beyond
writing to the stream it is given; the CLI and the local demo both print through it.
"""

from __future__ import annotations

from typing import Any, TextIO


def render_report(report: dict[str, Any], out: TextIO) -> None:
    c = report["counts"]
    mode = "dry run" if report["dry_run"] else "apply"
    print(
        f"pass {report['pass_id']} ({report['trigger']}, {mode}) in {report['duration_s']:.2f} s: "
        f"{c['targets']} target(s), {c['drifts']} drift(s), {c['steps']} step(s), {c['fixed']} fixed",
        file=out,
    )
    for t in report["targets"]:
        print(f"\n[{t['target']}] {t['status'].upper()}", file=out)
        if t.get("changed_by"):
            print(f"  changed by {t['changed_by']['text']}", file=out)
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
            print("  no drift", file=out)
        for s in t["plan"]["steps"]:
            print(f"  plan: {s}", file=out)
        for n in t["plan"]["notes"]:
            print(f"  note: {n}", file=out)
        skipped: dict[str, list[str]] = {}
        for s in t["plan"]["skipped"]:
            skipped.setdefault(s["reason"], []).append(s["identity"].split("|", 2)[1])
        for reason, codes in skipped.items():
            print(f"  left alone ({reason}): {', '.join(sorted(set(codes)))}", file=out)
        for o in t["outcomes"]:
            print(f"  {o['outcome']}: {o['step']} — {o['detail']}", file=out)
        if not report["dry_run"] and t["outcomes"]:
            print(f"  still drifting after apply: {len(t['remaining'])}", file=out)
        for e in t["errors"]:
            print(f"  ERROR [{e['stage']}]: {e['message']}", file=out)
    for e in report["errors"]:
        print(f"ERROR [{e['stage']}]: {e['message']}", file=out)


def table(out: TextIO, title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    print(f"  {title}:", file=out)
    if not rows:
        print("    (none)", file=out)
        return
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [min(72, max(len(c), *(len(row[i]) for row in cells))) for i, c in enumerate(cols)]
    print("    " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)), file=out)
    for row in cells:
        print("    " + "  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)), file=out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return "; ".join(str(x) for x in v) or "-"
    return str(v)


def render_trace(t: dict[str, Any], out: TextIO) -> None:
    """One block per path: the hops in order with their evidence; the root cause is marked with >."""
    print(f"[{t['target']}] {t['prefix']}: {t['verdict'].upper()}", file=out)
    for p in t["paths"]:
        src = {"onprem": "on-premises", "subnet": "subnet", "nic": "NIC"}.get(p["source_kind"], p["source_kind"])
        cause = f" (root cause: {p['root_cause']})" if p["root_cause"] else ""
        print(f"  from {src} {p['source']}: {p['verdict'].upper()}{cause}", file=out)
        for i, h in enumerate(p["hops"], 1):
            mark = ">" if h["id"] == p["root_cause"] else " "
            codes = sorted({d["code"] for d in h["drifts"]})
            tail = f"  [{', '.join(codes)}]" if codes else ""
            print(f"  {mark}{i:>2}. {h['verdict']:<8} {h['label']}{tail}", file=out)
            for e in h["evidence"]:
                where = f" [{e['instance']}]" if e["instance"] else ""
                print(f"                {e['read']} {e['field']}{where}: {e['value']}", file=out)
