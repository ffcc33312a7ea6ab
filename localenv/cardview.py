"""Render Teams messages as a Teams user sees them: the official `adaptivecards` renderer (npm,
pinned in tools/) with Teams' light host config, in Debian's headless Chromium.

Owns the render page, what it measures (element order, links, WCAG contrast of every rendered
text) and the screenshots. Must not know what a card should say: tests and the demo judge that.

Chromium is launched by `browser` (one command line for the status page and the cards). Why
`chromium --headless --dump-dom` / `--screenshot` and not a CDP client: nothing to pin or
download (Playwright's pinned browser cannot be fetched here; Debian's chromium is installed by
`.ci/run`), and the page renders synchronously from inline data before the load event, which is
exactly when `--dump-dom` captures, so there is no wait, poll or protocol state to get wrong. The
page writes its measurements into the DOM; a second run takes the screenshot at the measured height.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

from localenv import ROOT, browser

MODULES = ROOT / "tools" / "node_modules"
HOST_CONFIG = ROOT / "tools" / "hostconfig" / "teams-light.json"
WIDTH = 640  # about a Teams channel post at "Full" width on a laptop screen

# WCAG 2.1 AA, success criterion 1.4.3: 4.5:1 for text, 3:1 for large text (>= 24 px, or >= 18.66 px bold).
AA_TEXT, AA_LARGE = 4.5, 3.0

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<style>{css}</style>
<style>
  html, body {{ margin: 0; background: #f5f5f5; }}
  #post {{ width: {width}px; margin: 12px; background: #ffffff; border-radius: 4px;
          box-shadow: 0 1px 2px rgba(0,0,0,.14); overflow: hidden; }}
  #from {{ font: 600 12px 'Segoe UI', Tahoma, sans-serif; color: #616161; margin: 12px 12px 0; }}
</style>
{markdown_it}
<script src="{adaptivecards}"></script>
</head><body>
<div id="from">Workflows · ars-reconciler</div>
<div id="post"></div>
<pre id="report"></pre>
<script>
"use strict";
const report = {{ errors: [] }};
try {{
  const AC = window.AdaptiveCards;
  report.markdown = !!window.markdownit;
  if (window.markdownit) {{
    const md = window.markdownit({{ linkify: true }});  // Teams turns bare URLs into links too
    AC.AdaptiveCard.onProcessMarkdown = (text, result) => {{
      result.outputHtml = md.render(text);
      result.didProcess = true;
    }};
  }}
  const card = new AC.AdaptiveCard();
  card.hostConfig = new AC.HostConfig({host});
  const opened = [];
  card.onExecuteAction = (action) => opened.push(action.url);
  card.parse({content});
  const rendered = card.render();
  document.getElementById("post").appendChild(rendered);

  // Which of our element ids appear, in document order.
  report.ids = Array.from(rendered.querySelectorAll("[id]")).map((e) => e.id);
  // Links a reader could click inside the card's text (the buttons are not links).
  report.anchors = Array.from(rendered.querySelectorAll("a[href]")).map((a) => a.getAttribute("href"));
  // The buttons, and the URL each opens when clicked, as a user would.
  const buttons = Array.from(rendered.querySelectorAll("button"));
  report.buttons = buttons.map((b) => b.textContent.trim());
  buttons.forEach((b) => b.click());
  report.opened = opened;
  report.text = rendered.innerText;

  // WCAG contrast of every element that shows text, on the colours the browser really painted.
  const rgba = (s) => {{
    const m = s.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(",").map((x) => parseFloat(x));
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }};
  const over = (top, bottom) => {{
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  }};
  const background = (el) => {{
    const layers = [];
    for (let e = el; e; e = e.parentElement) {{
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }}
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  }};
  const lum = (c) => {{
    const f = (v) => {{ v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }};
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  }};
  report.contrast = [];
  const all = [rendered, ...rendered.querySelectorAll("*")];
  for (const el of all) {{
    const own = Array.from(el.childNodes).filter((n) => n.nodeType === 3 && n.textContent.trim()).length;
    if (!own) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") continue;
    const bg = background(el);
    const fg = over(rgba(style.color), bg);
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize);
    const bold = parseInt(style.fontWeight, 10) >= 700 || (parseInt(style.fontWeight, 10) >= 600 && size >= 18.66);
    const large = size >= 24 || (bold && size >= 18.66);
    report.contrast.push({{
      text: el.textContent.trim().slice(0, 60), ratio: Math.round(ratio * 100) / 100, large: large,
      fg: style.color, bg: "rgb(" + bg.slice(0, 3).map(Math.round).join(", ") + ")",
    }});
  }}
  report.height = Math.ceil(document.getElementById("post").getBoundingClientRect().bottom) + 12;
}} catch (e) {{
  report.errors.push(String(e && e.stack || e));
}}
document.getElementById("report").textContent = JSON.stringify(report);
</script>
</body></html>
"""


class RenderUnavailable(RuntimeError):
    """Chromium or the npm modules are missing (`make deps`; `.ci/run` installs chromium)."""


@dataclass(frozen=True)
class Contrast:
    text: str
    ratio: float
    large: bool
    fg: str
    bg: str

    @property
    def passes_aa(self) -> bool:
        return self.ratio >= (AA_LARGE if self.large else AA_TEXT)


@dataclass(frozen=True)
class Rendered:
    """What the renderer produced for one message, measured in the browser."""

    ids: list[str]
    anchors: list[str]
    buttons: list[str]
    opened: list[str]
    text: str
    contrast: list[Contrast]
    height: int
    errors: list[str]
    markdown: bool  # rendered through markdown-it (as Teams renders markdown); False: literally

    def failing_contrast(self) -> list[Contrast]:
        return [c for c in self.contrast if not c.passes_aa]


def _page(message: dict[str, Any]) -> str:
    modules = {
        "adaptivecards": MODULES / "adaptivecards" / "dist" / "adaptivecards.min.js",
        "css": MODULES / "adaptivecards" / "dist" / "adaptivecards.css",
    }
    for path in modules.values():
        if not path.exists():
            raise RenderUnavailable(f"{path.relative_to(ROOT)} missing: run `make deps`")
    # Markdown as Teams does it; without it (an older tools/ install) text renders literally, which
    # is fine for a screenshot, and `Rendered.markdown` tells a test it cannot judge links.
    markdown_it = MODULES / "markdown-it" / "dist" / "markdown-it.min.js"
    md_tag = f'<script src="{markdown_it.as_uri()}"></script>' if markdown_it.exists() else ""
    host = json.loads(HOST_CONFIG.read_text())
    content = message["attachments"][0]["content"]

    def inline(value: Any) -> str:
        # Inside <script>: "</" must not end the element early, whatever the card's text says.
        return json.dumps(value).replace("</", "<\\/")

    return _PAGE.format(
        css=modules["css"].read_text(), width=WIDTH, markdown_it=md_tag,
        adaptivecards=modules["adaptivecards"].as_uri(), host=inline(host), content=inline(content),
    )


def _run(args: list[str], timeout: float) -> str:
    if browser.chromium() is None:
        raise RenderUnavailable("no chromium on PATH (Debian: apt-get install chromium)")
    # The render page loads adaptivecards.js and its CSS from tools/node_modules via file://.
    return browser.run(["--allow-file-access-from-files", *args], timeout)


def render(message: dict[str, Any], screenshot: Path | None = None, timeout: float = 60.0) -> Rendered:
    """Render one Workflows message; measure it; optionally save a PNG of the post as Teams shows it."""
    with tempfile.TemporaryDirectory(prefix="cardview-") as tmp:
        page = Path(tmp) / "card.html"
        page.write_text(_page(message), encoding="utf-8")
        dom = _run([f"--window-size={WIDTH + 40},2000", "--dump-dom", page.as_uri()], timeout)
        start = dom.find('<pre id="report">')
        end = dom.find("</pre>", start)
        if start < 0 or end < 0:
            raise RuntimeError("the render page wrote no report")
        data = json.loads(unescape(dom[start + len('<pre id="report">') : end]))
        height = int(data.get("height") or 600)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            _run([f"--window-size={WIDTH + 24},{height}", f"--screenshot={screenshot}", page.as_uri()], timeout)
    return Rendered(
        ids=data.get("ids", []), anchors=data.get("anchors", []), buttons=data.get("buttons", []),
        opened=data.get("opened", []), text=data.get("text", ""),
        contrast=[Contrast(**c) for c in data.get("contrast", [])], height=height, errors=data.get("errors", []),
        markdown=bool(data.get("markdown")),
    )
