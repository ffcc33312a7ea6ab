"""Headless Chromium (Debian `chromium`) for the status page and the path pictures: the DOM a real
browser builds, and screenshots.

Owns the command line and a small DOM reader. Must not know what the page shows.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

TIMEOUT_S = 60


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run(args: list[str], timeout: float = TIMEOUT_S) -> str:
    """Run headless Chromium with `args`; its stdout. The one place the browser is launched (the
    status page and pictures here, the Teams card renderer in `cardview`)."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian package `chromium`)")
    # A throwaway profile: nothing is shared between runs or with a user's browser. --no-sandbox:
    # CI runs as root, where Chromium's sandbox refuses to start; the pages are our own, on loopback.
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={profile}", *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-500:]}")
    return proc.stdout


def dump_dom(url: str) -> str:
    """The DOM after the page loaded, serialised by the browser."""
    return run(["--dump-dom", url])


def screenshot(url: str, path: Path, width: int = 1600, height: int = 1200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    run([f"--screenshot={path}", f"--window-size={width},{height}", url])
    return path


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Reader(HTMLParser):
    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.stack = [self.root]
        self.all: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        self.all.append(el)
        if tag not in self.VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        self.all.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for el in self.stack[1:]:
            el.text += data


def parse(dom: str) -> list[Element]:
    """Every element of the document, in order (each with its text content)."""
    r = _Reader()
    r.feed(dom)
    return r.all
