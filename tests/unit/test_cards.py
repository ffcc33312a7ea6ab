"""Teams card layout: envelope, content, looks per kind, and the 28 KB budget."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.alerts import Kind, Notification
from reconciler.cards import MAX_BYTES, build_message, build_messages, drift_link, serialize
from reconciler.drift import Drift, DriftCode

FIRST = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
DRIFT_URL = "https://reconciler.example/api/drift/"


def note(kind: Kind, code: DriftCode = DriftCode.PEER_DOWN, subject: str = "peer=nva1/instance=IN_0",
         target: str = "hub-weu", **kw: Any) -> Notification:
    d = Drift(target, code, subject, kw.pop("message", "BGP session Idle"))
    return Notification(
        kind=kind, target=target, identity=d.identity, code=code, subject=subject, severity=d.severity,
        message=d.message, expected=kw.pop("expected", "Connected"), observed=kw.pop("observed", "Idle"),
        first_seen=FIRST, **kw,
    )


def card(message: dict[str, Any]) -> dict[str, Any]:
    content: dict[str, Any] = message["attachments"][0]["content"]
    return content


def texts(message: dict[str, Any]) -> str:
    """Every visible string of the card, flattened (for 'does it say X' assertions)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("text", "title", "value", "url") and isinstance(value, str):
                    out.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card(message))
    return "\n".join(out)


def test_message_is_a_workflows_envelope_around_an_adaptive_card_1_4() -> None:
    msg = build_message("hub-weu", [note(Kind.FIRING)], DRIFT_URL)
    assert msg["type"] == "message"
    [attachment] = msg["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    content = attachment["content"]
    assert content["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (content["type"], content["version"]) == ("AdaptiveCard", "1.4")
    assert json.loads(serialize(msg)) == msg


def test_card_says_target_code_expected_observed_first_seen_action_and_outcome() -> None:
    acted = note(Kind.FIRING, action="re-applied neighbor config", outcome="succeeded")
    msg = build_message("hub-weu", [acted], DRIFT_URL)
    shown = texts(msg)
    for expected in ("hub-weu", "PEER_DOWN", "peer=nva1/instance=IN_0", "Connected", "Idle",
                     "2026-11-25 08:00:00 UTC", "re-applied neighbor config", "succeeded", "nva agent"):
        assert expected in shown, expected


def test_card_links_to_the_drift_endpoint_of_its_target() -> None:
    msg = build_message("hub weu/1", [note(Kind.FIRING, target="hub weu/1")], DRIFT_URL)
    [action] = card(msg)["actions"]
    assert action["type"] == "Action.OpenUrl"
    assert action["url"] == "https://reconciler.example/api/drift/hub%20weu%2F1"
    assert drift_link("http://x/api/drift", "t") == "http://x/api/drift/t"


def test_firing_and_resolved_cards_look_different() -> None:
    firing = card(build_message("hub-weu", [note(Kind.FIRING)], DRIFT_URL))["body"][0]
    resolved = card(build_message("hub-weu", [note(Kind.RESOLVED, duration_s=3725.0)], DRIFT_URL))["body"][0]
    assert firing["style"] == "attention" and firing["items"][0]["color"] == "Attention"
    assert resolved["style"] == "good" and resolved["items"][0]["color"] == "Good"
    assert firing["items"][0]["text"].startswith("FIRING")
    assert resolved["items"][0]["text"].startswith("RESOLVED")


def test_resolved_says_how_long_it_lasted() -> None:
    msg = build_message("hub-weu", [note(Kind.RESOLVED, duration_s=3725.0)], DRIFT_URL)
    assert "Lasted" in texts(msg) and "1 h 2 min" in texts(msg)


@pytest.mark.parametrize(("kind", "title", "style"), [
    (Kind.BLIND, "RECONCILER BLIND", "warning"),
    (Kind.UNBLIND, "RECONCILER CAN SEE AGAIN", "good"),
    (Kind.FLAPPING, "FLAPPING", "warning"),
    (Kind.REMINDER, "STILL FIRING", "attention"),
])
def test_each_kind_has_its_own_title_and_style(kind: Kind, title: str, style: str) -> None:
    header = card(build_message("hub-weu", [note(kind, code=DriftCode.OBSERVATION_FAILED,
                                                 subject="reconciler=blind")], DRIFT_URL))["body"][0]
    assert header["items"][0]["text"] == f"{title}: hub-weu"
    assert header["style"] == style


def test_mixed_card_is_titled_by_the_most_urgent_kind_and_counts_all() -> None:
    msg = build_message("hub-weu", [note(Kind.RESOLVED, duration_s=1.0, subject="peer=a"),
                                    note(Kind.FIRING, subject="peer=b")], DRIFT_URL)
    header = card(msg)["body"][0]
    assert header["items"][0]["text"] == "FIRING: hub-weu"
    assert header["items"][1]["text"] == "1 firing, 1 resolved"


def test_big_pass_is_truncated_under_28_kb_with_and_n_more() -> None:
    notes = [note(Kind.FIRING, code=DriftCode.ROUTE_MISSING, subject=f"peer=nva1/prefix=10.{i}.0.0/16",
                  message="route not learned " + "x" * 200) for i in range(400)]
    msg = build_message("hub-weu", notes, DRIFT_URL)
    size = len(serialize(msg))
    assert size <= MAX_BYTES
    shown = sum(1 for e in card(msg)["body"] if str(e.get("id", "")).startswith("alert-"))
    assert 10 < shown < 400
    assert card(msg)["body"][-1]["text"].startswith(f"… and {400 - shown} more")
    assert size > MAX_BYTES - 2_000  # the budget is used, not wasted


def test_truncation_keeps_firing_before_resolved() -> None:
    notes = [note(Kind.RESOLVED, subject=f"peer=r{i}", duration_s=1.0, message="m" * 500) for i in range(80)]
    notes.append(note(Kind.FIRING, subject="peer=urgent"))
    msg = build_message("hub-weu", notes, DRIFT_URL)
    assert len(serialize(msg)) <= MAX_BYTES
    assert "peer=urgent" in texts(msg)


def test_one_huge_field_is_clipped_not_allowed_to_hide_everything() -> None:
    msg = build_message("hub-weu", [note(Kind.FIRING, observed="10.0.0.0/24 " * 5_000)], DRIFT_URL)
    assert len(serialize(msg)) < 5_000
    assert "…" in texts(msg)


def test_small_card_is_not_truncated() -> None:
    msg = build_message("hub-weu", [note(Kind.FIRING, subject=f"peer={i}") for i in range(3)], DRIFT_URL)
    assert "more" not in texts(msg)


def test_build_messages_groups_per_target() -> None:
    msgs = build_messages([note(Kind.FIRING, target="a"), note(Kind.RESOLVED, target="b", duration_s=1.0),
                           note(Kind.FIRING, target="a", subject="peer=z")], DRIFT_URL)
    assert list(msgs) == ["a", "b"]
    assert texts(msgs["a"]).count("PEER_DOWN") == 2


def test_notifications_of_another_target_are_refused() -> None:
    with pytest.raises(ValueError):
        build_message("a", [note(Kind.FIRING, target="b")], DRIFT_URL)
    with pytest.raises(ValueError):
        build_message("a", [], DRIFT_URL)


def test_element_ids_are_unique() -> None:
    msg = build_message("hub-weu", [note(Kind.FIRING, subject=f"peer={i}") for i in range(20)], DRIFT_URL)
    ids = [e["id"] for e in card(msg)["body"] if "id" in e]
    assert len(ids) == len(set(ids)) == 20
