"""Every card the product can produce, parsed by the official Adaptive Cards library (node)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.alerts import AlertRules, AlertState, Kind, Notification, evaluate
from reconciler.cards import MAX_BYTES, build_message, build_messages, serialize
from reconciler.drift import Drift, DriftCode

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tools" / "validate-card.js"
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
HUB = "hub-weu"
DRIFT_URL = "http://127.0.0.1:7071/api/drift"


def validate(files: list[Path]) -> tuple[int, str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the card validator needs it")
    if not (ROOT / "tools" / "node_modules" / "adaptivecards").exists():
        pytest.fail("tools/node_modules/adaptivecards missing; run `npm ci` in tools/")
    proc = subprocess.run([node, str(VALIDATOR), *map(str, files)], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def produced_cards() -> dict[str, dict[str, Any]]:
    """Drive the real state machine into every notification kind; keep each pass's cards."""
    rules = AlertRules(flap_transitions=4, flap_quiet=timedelta(minutes=10))
    peer_down = Drift(HUB, DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_0", "session Idle",
                      expected="Connected", observed="Idle")
    udr = Drift(HUB, DriftCode.UDR_INVARIANT_BROKEN, "subnet=hub:AzureFirewallSubnet/prefix=0.0.0.0/0",
                "0.0.0.0/0 → Internet route removed — traffic is black-holed",
                expected="0.0.0.0/0 → Internet", observed="(absent)")
    flappy = Drift(HUB, DriftCode.PEER_FAILED, "peer=nva2", "bgpConnection Failed <again> & \"again\"")
    actions = {udr.identity: ("re-created route 0.0.0.0/0 → Internet", "succeeded")}
    passes: list[tuple[str, float, list[Drift], dict[str, str]]] = [
        ("first", 0, [peer_down, udr], {}),
        ("firing", 180, [peer_down, udr, flappy], {}),
        ("mixed", 240, [udr], {}),
        ("flap1", 300, [udr, flappy], {}),
        ("flapping", 360, [udr], {}),
        ("blind-pending", 400, [], {HUB: "agent unreachable: connect timeout"}),
        ("blind", 600, [], {HUB: "agent unreachable: connect timeout"}),
        ("unblind", 900, [udr], {}),
        ("reminder", 4 * 3600 + 60, [udr], {}),
        ("resolved", 4 * 3600 + 120, [], {}),
    ]
    states: dict[str, AlertState] = {}
    cards: dict[str, dict[str, Any]] = {}
    kinds: set[Kind] = set()
    for name, t, drifts, blind in passes:
        states, notes = evaluate(states, drifts, blind, [HUB], T0 + timedelta(seconds=t), rules, actions)
        kinds |= {n.kind for n in notes}
        for target, message in build_messages(notes, DRIFT_URL).items():
            cards[f"{name}-{target}"] = message
    assert kinds == set(Kind), f"the scenario must produce every kind, missing {set(Kind) - kinds}"

    many = [
        Notification(kind=Kind.FIRING, target=HUB, identity=f"{HUB}|ROUTE_MISSING|{i}", code=DriftCode.ROUTE_MISSING,
                     subject=f"peer=nva1/instance=IN_0/prefix=10.{i // 256}.{i % 256}.0/24",
                     severity=Drift(HUB, DriftCode.ROUTE_MISSING, "", "").severity,
                     message="desired prefix not learned from the NVA " * 3, expected="learned", observed="absent",
                     first_seen=T0)
        for i in range(600)
    ]
    cards["truncated"] = build_message(HUB, many, DRIFT_URL)
    return cards


def test_every_card_kind_parses_without_errors_or_warnings(tmp_path: Path) -> None:
    cards = produced_cards()
    files = []
    for name, message in cards.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(serialize(message))
        files.append(path)
        assert len(serialize(message)) < MAX_BYTES, name
    assert any("… and" in json.dumps(m, ensure_ascii=False) for m in cards.values())  # truncation happened
    code, output = validate(files)
    assert code == 0, output
    assert output.count(": ok") == len(files), output


def test_validator_rejects_a_broken_card(tmp_path: Path) -> None:
    """The validator must be able to fail, or the test above proves nothing."""
    message = produced_cards()["firing-hub-weu"]
    content = message["attachments"][0]["content"]
    content["body"][0]["style"] = "scarlet"  # not a 1.4 container style
    content["body"][0]["items"][0]["colour"] = "Attention"  # a typo the library ignores silently
    content["actions"][0].pop("url")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(message))
    code, output = validate([path])
    assert code == 1
    assert "Invalid value" in output and "colour" in output and '"url" must be set' in output
