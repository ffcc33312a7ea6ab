"""The trace drawn as a picture: one row per source, one box per hop, coloured by verdict (pure).

Owns the layout and the colours. Draws with drawsvg (no hand-written SVG); every box carries
`data-hop`/`data-verdict` and a tooltip with its evidence, and links to `#hop-<target>-<hop id>` on the
status page. Must not know how a trace is computed or served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

import drawsvg as draw  # type: ignore[import-untyped]

from reconciler.trace import Hop, HopKind, Path, SourceKind, Trace, Verdict

COLOURS = {Verdict.OK: "#2e7d32", Verdict.BROKEN: "#c62828", Verdict.UNKNOWN: "#9e9e9e"}
FILLS = {Verdict.OK: "#e8f5e9", Verdict.BROKEN: "#ffebee", Verdict.UNKNOWN: "#f5f5f5"}
BOX_W, BOX_H, GAP, LEFT, ROW_H, TOP = 138, 46, 22, 200, 74, 58
FONT = "DejaVu Sans, Verdana, sans-serif"  # shipped with Debian's chromium fonts: works offline


class _Link(draw.DrawingParentElement):  # type: ignore[misc]
    """An SVG <a>: drawsvg's extension point for an element it does not name."""

    TAG_NAME = "a"


def _attr(value: str) -> str:
    """An attribute value escaped for XML. drawsvg (2.4.2) escapes text content and titles but
    writes attribute values as given, and hop ids, sources and drift identities carry names
    observed in Azure (an undeclared peer's, say): the status page embeds the SVG as-is."""
    return escape(value, {'"': "&quot;"})  # drawsvg quotes attributes with '"'; & < > are escaped too


def hop_anchor(target: str, hop_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in hop_id)
    return f"hop-{target}-{safe}"


def short_label(hop: Hop) -> tuple[str, str]:
    """Two short lines for a box; the full label is in the tooltip."""
    parts = hop.id.split(":")
    name = parts[-1] if len(parts) > 1 else ""
    return {
        HopKind.ROUTE_SERVER: ("Route Server", "health"),
        HopKind.PEERING: ("BGP peering", name),
        HopKind.NVA: ("NVA (FRR)", name),
        HopKind.ROUTE_SERVER_LEARNED: ("Route Server", f"learned from {name}"),
        HopKind.BRANCH_TO_BRANCH: ("branch-to-branch", ""),
        HopKind.GATEWAY_LEARNED: ("gateway", f"{name} learned"),
        HopKind.GATEWAY_ADVERTISED: ("advertised to", name),
        HopKind.FIREWALL: ("Azure Firewall", ""),
        HopKind.SUBNET_ROUTE: ("subnet route", parts[-1] if parts else ""),
        HopKind.NIC_ROUTE: ("NIC route", name),
    }[hop.kind]


def _source_label(p: Path) -> str:
    kind = {SourceKind.ONPREM: "on-premises", SourceKind.SUBNET: "subnet", SourceKind.NIC: "NIC"}[p.source_kind]
    return _fit(f"{kind} {p.source.split(':')[-1]}", 26)


def draw_trace(tr: Trace, link_base: str = "") -> draw.Drawing:
    longest = max((len(p.hops) for p in tr.paths), default=1)
    width = LEFT + longest * (BOX_W + GAP) + 20
    height = TOP + len(tr.paths) * ROW_H + 10
    d = draw.Drawing(width, height, font_family=FONT)
    d.append(draw.Rectangle(0, 0, width, height, fill="white"))
    title = f"{tr.target} - {tr.prefix}: {tr.verdict.value}"
    d.append(draw.Text(title, 18, 12, 28, font_weight="bold", fill=COLOURS[tr.verdict], class_="trace-title"))
    d.append(
        draw.Text("control plane first: the first broken hop is the root cause (thick border)", 11, 12, 46, fill="#555")
    )
    for row, p in enumerate(tr.paths):
        y = TOP + row * ROW_H
        group = draw.Group(class_="path", data_source=_attr(p.source), data_verdict=p.verdict.value)
        group.append(draw.Text(_source_label(p), 13, 12, y + BOX_H / 2 + 4, fill=COLOURS[p.verdict]))
        cause = p.root_cause
        for i, hop in enumerate(p.hops):
            x = LEFT + i * (BOX_W + GAP)
            if i:
                group.append(draw.Line(x - GAP, y + BOX_H / 2, x - 4, y + BOX_H / 2, stroke="#777", stroke_width=2))
                group.append(
                    draw.Lines(x - 9, y + BOX_H / 2 - 5, x - 2, y + BOX_H / 2, x - 9, y + BOX_H / 2 + 5, fill="#777")
                )
            group.append(_box(tr.target, hop, x, y, hop is cause, link_base))
        d.append(group)
    return d


def _box(target: str, hop: Hop, x: float, y: float, is_cause: bool, link_base: str) -> draw.DrawingElement:
    link = _Link(href=_attr(f"{link_base}#{hop_anchor(target, hop.id)}"))
    box = draw.Group(
        class_=f"hop {hop.verdict.value}" + (" root-cause" if is_cause else ""),
        data_hop=_attr(hop.id),
        data_verdict=hop.verdict.value,
    )
    box.append(
        draw.Rectangle(
            x,
            y,
            BOX_W,
            BOX_H,
            rx=6,
            fill=FILLS[hop.verdict],
            stroke=COLOURS[hop.verdict],
            stroke_width=4 if is_cause else 1.5,
        )
    )
    first, second = short_label(hop)
    box.append(draw.Text(first, 12, x + 8, y + 17, font_weight="bold", fill="#222"))
    box.append(draw.Text(_fit(second), 11, x + 8, y + 32, fill="#333"))
    box.append(draw.Text(hop.verdict.value, 10, x + BOX_W - 8, y + 42, text_anchor="end", fill=COLOURS[hop.verdict]))
    lines = [hop.label, *(f"{e.read} {e.instance}: {e.value}".strip() for e in hop.evidence)]
    lines += [f"explains {d.code.value}" for d in hop.drifts]
    box.append_title("\n".join(lines))
    link.append(box)
    return link


def _fit(text: str, limit: int = 21) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trace_svg(tr: Trace, link_base: str = "") -> str:
    return _svg(draw_trace(tr, link_base))


def _svg(d: draw.Drawing) -> str:
    """The drawing as an <svg> element (no XML declaration), fit for a file or inline in HTML."""
    text = str(d.as_svg())
    return text[text.index("<svg") :]


# ---- the drift timeline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """One incident of one drift: open from `start` to `end` (None: still open)."""

    identity: str
    code: str
    severity: str
    start: datetime
    end: datetime | None


SEVERITY_COLOURS = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
MAX_ROWS = 30


def timeline_svg(intervals: list[Interval], now: datetime, days: int = 7) -> str:
    """Bars per drift identity over the last `days` (newest incidents first, at most MAX_ROWS rows)."""
    since = now - timedelta(days=days)
    shown = [i for i in intervals if (i.end or now) >= since]
    rows: dict[str, list[Interval]] = {}
    for i in sorted(shown, key=lambda i: i.start, reverse=True):
        rows.setdefault(i.identity, []).append(i)
    names = list(rows)[:MAX_ROWS]
    label_w, plot_w, row_h, top = 430, 640, 18, 28
    width, height = label_w + plot_w + 20, top + max(1, len(names)) * row_h + 10
    d = draw.Drawing(width, height, font_family=FONT)
    d.append(draw.Rectangle(0, 0, width, height, fill="white"))
    span = (now - since).total_seconds()

    def x(t: datetime) -> float:
        return label_w + plot_w * max(0.0, min(1.0, (t - since).total_seconds() / span))

    for day in range(days + 1):
        t = since + timedelta(days=day)
        d.append(draw.Line(x(t), top - 6, x(t), height - 6, stroke="#e0e0e0"))
        d.append(draw.Text(t.strftime("%m-%d"), 10, x(t), top - 10, text_anchor="middle", fill="#666"))
    if not names:
        d.append(draw.Text("no drift in this window", 12, label_w, top + 12, fill="#2e7d32"))
    for n, identity in enumerate(names):
        y = top + n * row_h
        target, code, subject = [*identity.split("|", 2), "", ""][:3]
        d.append(draw.Text(_fit(f"{target} {code} {subject}", 70), 10, 8, y + 12, fill="#333"))
        for i in rows[identity]:
            bar = draw.Rectangle(
                x(i.start),
                y + 3,
                max(2.0, x(i.end or now) - x(i.start)),
                row_h - 6,
                fill=SEVERITY_COLOURS.get(i.severity, "#777"),
                class_="incident" + (" open" if i.end is None else ""),
                data_identity=_attr(identity),
            )
            end = "open" if i.end is None else i.end.isoformat(timespec="seconds")
            bar.append_title(f"{identity}\n{i.start.isoformat(timespec='seconds')} -> {end}")
            d.append(bar)
    return _svg(d)
