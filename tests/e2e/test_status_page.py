"""The status page and the path picture in a real browser: headless Chromium loads them from the local
host shim (the app's own function objects) over the ARM emulator and Azurite; the DOM is asserted and
a screenshot saved."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import function_app
from emulator import ArmEmulator
from localenv import browser, scenarios
from localenv.azurite import Azurite
from localenv.host import LocalHost
from reconciler.composition import Worker

pytestmark = pytest.mark.skipif(browser.chromium() is None, reason="needs Debian chromium (.ci/run installs it)")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "out" / "screens"


@pytest.fixture
def host(azurite: Azurite, worker: Worker) -> Iterator[LocalHost]:
    with LocalHost(
        function_app.app, storage_connection=azurite.connection_string, key="k1", on_close=worker.aclose
    ) as h:
        yield h


def reconcile(h: LocalHost) -> dict[str, Any]:
    req = urllib.request.Request(f"{h.url}/api/reconcile", data=b"{}", method="POST")
    req.add_header("x-functions-key", "k1")
    with urllib.request.urlopen(req, timeout=60) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def test_status_page_shows_the_broken_path_its_cause_and_the_ledger(host: LocalHost, emulator: ArmEmulator) -> None:
    reconcile(host)  # a healthy pass in the ledger
    scenarios.branch_to_branch_off(emulator)  # Azure writes are off: left for a human, stays open
    report = reconcile(host)
    assert report["targets"][0]["status"] == "drift"

    url = f"{host.url}/api/status?code=k1"
    els = browser.parse(browser.dump_dom(url))
    shot = browser.screenshot(url, SHOTS / "status-broken.png", 1600, 1500)
    assert shot.stat().st_size > 10_000

    # The path picture: one box per hop, coloured by verdict; the first broken hop is the cause.
    boxes = [e for e in els if e.tag == "g" and "hop" in e.classes()]
    onprem = [e for e in els if e.tag == "g" and e.attrs.get("data-source") == "ergw:10.0.0.12"]
    assert len(onprem) == 1
    verdicts = {b.attrs["data-hop"]: b.attrs["data-verdict"] for b in boxes}
    assert verdicts["branch_to_branch"] == "broken"
    assert verdicts["route_server"] == verdicts["nva:nva1"] == verdicts["firewall"] == "ok"
    causes = {b.attrs["data-hop"] for b in boxes if "root-cause" in b.classes()}
    assert causes == {"branch_to_branch"}
    # Every box links to its row in the hop table, and that row exists.
    links = [e.attrs.get("href", "") for e in els if e.tag == "a" and e.attrs.get("href", "").startswith("#hop-")]
    ids = {e.attrs["id"] for e in els if "id" in e.attrs}
    assert links and all(link[1:] in ids for link in links)

    # Open drift with its cause, linked to the hop; the cause of the gateway's drift is upstream.
    rows = {e.attrs["data-identity"]: e for e in els if e.tag == "tr" and "data-identity" in e.attrs}
    b2b = rows["hub-weu|BRANCH_TO_BRANCH_DISABLED|route_server=ars-hub"]
    gw = rows["hub-weu|GATEWAY_NOT_LEARNING|gateway=ergw/prefix=0.0.0.0/0"]
    for row in (b2b, gw):
        (cause,) = [c for c in _descendants(row) if c.tag == "a" and "cause" in c.classes()]
        assert cause.attrs["href"] == "#hop-hub-weu-branch_to_branch"
        assert "branch-to-branch" in cause.text

    # The last passes and the timeline came from the ledger (Azurite).
    passes = [e for e in els if e.tag == "table" and "passes" in e.classes()]
    assert len([c for c in _descendants(passes[0]) if c.tag == "tr"]) == 3  # header + two passes
    bars = [e for e in els if e.tag == "rect" and "incident" in e.classes()]
    assert {b.attrs["data-identity"] for b in bars} >= {b2b.attrs["data-identity"]}
    # Offline: the only stylesheet comes from the app itself.
    sheets = [e.attrs["href"] for e in els if e.tag == "link"]
    assert sheets == ["static/status.css"]
    with urllib.request.urlopen(f"{host.url}/api/static/status.css", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/css")


def test_trace_svg_in_the_browser_is_whole_for_the_healthy_lab(host: LocalHost) -> None:
    url = f"{host.url}/api/trace?format=svg&target=hub-weu&code=k1"
    els = browser.parse(browser.dump_dom(url))
    boxes = [e for e in els if e.tag == "g" and "hop" in e.classes()]
    assert boxes and {b.attrs["data-verdict"] for b in boxes} == {"ok"}
    assert [e.text for e in els if e.tag == "text" and "trace-title" in e.classes()] == ["hub-weu - 0.0.0.0/0: ok"]
    browser.screenshot(url, SHOTS / "trace-healthy.png", 1700, 520)


def test_status_page_needs_the_function_key(host: LocalHost) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{host.url}/api/status", timeout=10)
    assert err.value.code == 401
    err.value.close()


def _descendants(el: browser.Element) -> Iterator[browser.Element]:
    for c in el.children:
        yield c
        yield from _descendants(c)
