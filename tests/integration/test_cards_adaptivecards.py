"""Every card the product can produce: parsed by the official Adaptive Cards library (node), and
rendered by it with Teams' light host config in headless Chromium, as a Teams user sees it."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from localenv.cardview import Rendered, render
from reconciler.alerts import AlertRules, AlertState, Kind, evaluate
from reconciler.cards import MAX_BYTES, AutoFix, Links, build_cards, fallback_card, serialize
from reconciler.drift import Drift, DriftCode
from tests.unit import factories

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tools" / "validate-card.js"
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
HUB = "hub"
LINKS = Links("https://ars-reconciler.azurewebsites.net")
TARGET = factories.target()
EVIL = "[Sign in](https://evil.example/login) <https://evil.example> \ud800"


def validate(files: list[Path]) -> tuple[int, str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the card validator needs it")
    if not (ROOT / "tools" / "node_modules" / "adaptivecards").exists():
        pytest.fail("tools/node_modules/adaptivecards missing; run `make deps`")
    proc = subprocess.run([node, str(VALIDATOR), *map(str, files)], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def produced_cards() -> dict[str, dict[str, Any]]:
    """Drive the real state machine into every notification kind; keep every card of every pass."""
    rules = AlertRules(flap_transitions=4, flap_quiet=timedelta(minutes=10))
    down = Drift(HUB, DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_0", "session Idle " + EVIL,
                 expected="Connected", observed="Idle")
    missing = Drift(HUB, DriftCode.ROUTE_MISSING, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0",
                    "0.0.0.0/0 from nva1 is not learned by RouteServiceRole_IN_0")
    udr = Drift(HUB, DriftCode.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0",
                "0.0.0.0/0 → Internet route removed — traffic is black-holed",
                expected="0.0.0.0/0 → Internet", observed="(absent)")
    flappy = Drift(HUB, DriftCode.PEER_FAILED, "peer=nva2", "bgpConnection Failed <again> & \"again\"")
    actions = {udr.identity: ("agent_intent nva1: originate 0.0.0.0/0 via 10.0.3.4", "not_confirmed")}
    skipped = {down.identity: "policy: NVA fixes are off for this target (policy.nva_fixes)"}
    passes: list[tuple[str, float, list[Drift], dict[str, str]]] = [
        ("first", 0, [down, missing, udr], {}),
        ("firing", 180, [down, missing, udr, flappy], {}),
        ("mixed", 240, [udr], {}),
        ("flap1", 300, [udr, flappy], {}),
        ("flapping", 360, [udr], {}),
        ("blind-pending", 400, [], {HUB: "agent unreachable: connect timeout " + EVIL}),
        ("blind", 600, [], {HUB: "agent unreachable: connect timeout " + EVIL}),
        ("unblind", 900, [udr], {}),
        ("reminder", 4 * 3600 + 60, [udr], {}),
        ("resolved", 4 * 3600 + 120, [], {}),
    ]
    states: dict[str, AlertState] = {}
    out: dict[str, dict[str, Any]] = {}
    kinds: set[Kind] = set()
    for name, t, drifts, blind in passes:
        now = T0 + timedelta(seconds=t)
        states, notes = evaluate(states, drifts, blind, [HUB], now, rules, actions, skipped)
        kinds |= {n.kind for n in notes}
        cards, problems = build_cards(notes, LINKS, {HUB: TARGET}, f"pass-{name}", (), now)
        assert problems == []
        for i, card in enumerate(cards):
            out[f"{name}-{i}"] = card.message
    assert kinds == set(Kind), f"the scenario must produce every kind, missing {set(Kind) - kinds}"

    fix = AutoFix(HUB, DriftCode.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0",
                  "next hop 10.0.1.6", "next hop 10.0.3.4", "agent_intent nva1: originate 0.0.0.0/0 via 10.0.3.4")
    [fixed], _ = build_cards([], LINKS, {HUB: TARGET}, "pass-fixed", [fix], T0)
    out["fixed"] = fixed.message
    flood = [
        Drift(HUB, DriftCode.ROUTE_UNEXPECTED, f"peer=nva1/instance=IN_0/prefix=10.{i // 256}.{i % 256}.0/24",
              "nva1 advertises a prefix nobody declared " * 3)
        for i in range(300)
    ]
    _, notes = evaluate({}, flood, {}, [HUB], T0, AlertRules(default_hold_down=timedelta(0),
                                                             hold_down={}), None)
    cards, _ = build_cards(notes, LINKS, {HUB: TARGET}, "pass-flood", (), T0)
    out["overflow"] = cards[-1].message
    out["fallback"] = fallback_card(HUB, LINKS, "pass-x")
    return out


@pytest.fixture(scope="module")
def cards() -> dict[str, dict[str, Any]]:
    return produced_cards()


@pytest.fixture(scope="module")
def rendered(cards: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    shots = tmp_path_factory.mktemp("shots")
    return {name: render(message, shots / f"{name}.png" if name == "firing-0" else None)
            for name, message in cards.items()}


def test_every_card_kind_parses_without_errors_or_warnings(cards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    files = []
    for name, message in cards.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(serialize(message))
        files.append(path)
        assert len(serialize(message)) < MAX_BYTES, name
    code, output = validate(files)
    assert code == 0, output
    assert output.count(": ok") == len(files), output


def test_validator_rejects_a_broken_card(cards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The validator must be able to fail, or the test above proves nothing."""
    message = copy.deepcopy(cards["firing-0"])
    content = message["attachments"][0]["content"]
    content["body"][0]["style"] = "scarlet"  # not a 1.4 container style
    content["body"][0]["items"][0]["colour"] = "Attention"  # a typo the library ignores silently
    content["actions"][0].pop("url")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(message))
    code, output = validate([path])
    assert code == 1
    assert "Invalid value" in output and "colour" in output and '"url" must be set' in output


def word(message: dict[str, Any]) -> str:
    """The kind word a card opens with (FIRING, RESOLVED, …)."""
    return str(message["attachments"][0]["content"]["body"][0]["items"][0]["text"]).split(" · ")[0]


def test_every_card_renders_cause_first_with_the_runbook(
    cards: dict[str, dict[str, Any]], rendered: dict[str, Rendered]
) -> None:
    words = {word(m) for m in cards.values()}
    assert {"FIRING", "STILL FIRING", "FLAPPING", "RECONCILER BLIND", "RESOLVED", "RECONCILER CAN SEE AGAIN",
            "FIXED AUTOMATICALLY", "ALERT"} <= words, words
    for name, r in rendered.items():
        assert r.errors == [], name
        assert r.markdown, "tools/node_modules/markdown-it missing: run `make deps`"
        assert r.ids[:2] == ["kind", "cause"], name  # the header, then the cause, before anything else
        incident = name not in ("fixed", "overflow", "fallback")
        if incident:
            assert r.ids.index("cause") < r.ids.index("reconciler"), name
        if incident and word(cards[name]) in ("FIRING", "STILL FIRING", "FLAPPING", "RECONCILER BLIND"):
            assert {"runbook", "meaning", "check", "blade", "fix"} <= set(r.ids), name
            assert "What to do" in r.text and "Fix by hand:" in r.text, name


def test_consequences_are_folded_under_their_cause(rendered: dict[str, Rendered]) -> None:
    first = [r for n, r in rendered.items() if n.startswith("firing-") and "PEER_DOWN" in r.text]
    [card] = first
    assert "consequences" in card.ids and card.ids.index("cause") < card.ids.index("consequences")
    assert card.text.index("PEER_DOWN") < card.text.index("ROUTE_MISSING")


def test_every_button_opens_a_well_formed_link(rendered: dict[str, Rendered]) -> None:
    for name, r in rendered.items():
        assert len(r.opened) == len(r.buttons) >= 2, name
        for url in r.opened:
            parts = urlsplit(url)
            assert parts.scheme == "https" and parts.netloc and " " not in url, (name, url)
            assert parts.netloc in ("portal.azure.com", "ars-reconciler.azurewebsites.net"), (name, url)
            if parts.netloc == "portal.azure.com":
                assert parts.fragment.startswith("resource/subscriptions/sub-1/resourceGroups/"), url
            else:
                assert parts.path in ("/api/drift", f"/api/runs/pass-{name.rsplit('-', 1)[0]}") or \
                    parts.path.startswith("/api/runs/pass-"), url
        assert any(u.endswith("/api/drift?target=hub") for u in r.opened), name


def test_untrusted_markdown_becomes_no_link(rendered: dict[str, Rendered]) -> None:
    shown = [r for r in rendered.values() if "Sign in" in r.text]
    assert len(shown) >= 2  # the PEER_DOWN card and the blind card carry the agent's text
    for r in shown:
        assert r.anchors == [], r.anchors
        assert "https://evil" not in r.text


def test_injected_link_would_be_caught(cards: dict[str, dict[str, Any]]) -> None:
    """Negative control: the same text unescaped does render a link, so the test above can fail."""
    message = copy.deepcopy(cards["fallback"])
    message["attachments"][0]["content"]["body"][1]["text"] = "[Sign in](https://evil.example/login)"
    assert render(message).anchors == ["https://evil.example/login"]


def test_every_rendered_text_meets_wcag_aa_contrast(rendered: dict[str, Rendered]) -> None:
    for name, r in rendered.items():
        assert r.contrast, name
        assert r.failing_contrast() == [], (name, r.failing_contrast())


def test_contrast_check_catches_the_old_coloured_headers(cards: dict[str, dict[str, Any]]) -> None:
    """Negative control: main's "Good"/"Warning" text colours on their own styles measured 1.85:1 and
    1.18:1 in Teams' light host config; the check must see it."""
    message = copy.deepcopy(cards["resolved-0"])
    message["attachments"][0]["content"]["body"][0]["items"][1]["color"] = "Good"
    failing = render(message).failing_contrast()
    assert failing and min(c.ratio for c in failing) < 2.0
