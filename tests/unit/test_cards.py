"""Teams card layout: one card per incident, cause first, runbook, links, safe text, 28 KB budget."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.alerts import Kind, Notification
from reconciler.cards import (
    MAX_BYTES,
    MAX_CARDS_PER_TARGET,
    AutoFix,
    Links,
    build_cards,
    clean,
    serialize,
    untrusted,
)
from reconciler.drift import Drift, DriftCode
from tests.unit import factories

FIRST = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
NOW = FIRST + timedelta(minutes=7)
LINKS = Links("https://reconciler.example/")
HUB = factories.target()
TARGETS = {HUB.name: HUB}


def note(kind: Kind, code: DriftCode = DriftCode.PEER_DOWN, subject: str = "peer=nva1/instance=IN_0",
         target: str = "hub", **kw: Any) -> Notification:
    d = Drift(target, code, subject, kw.pop("message", "BGP session Idle"))
    return Notification(
        kind=kind, target=target, identity=d.identity, code=code, subject=subject, severity=d.severity,
        message=d.message, expected=kw.pop("expected", "Connected"), observed=kw.pop("observed", "Idle"),
        first_seen=FIRST, at=kw.pop("at", NOW), **kw,
    )


def cards_of(notes: list[Notification], **kw: Any) -> list[dict[str, Any]]:
    cards, problems = build_cards(notes, LINKS, TARGETS, "pass-1", **kw)
    assert problems == []
    return [c.message for c in cards]


def content(message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = message["attachments"][0]["content"]
    return result


def by_id(message: dict[str, Any], element_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("id") == element_id:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(content(message)["body"])
    assert found, f"no element {element_id!r}"
    return found[0]


def plain(text: str) -> str:
    """What a markdown renderer shows for escaped text."""
    return re.sub(r"\\(.)", r"\1", text)


def text_of(message: dict[str, Any], element_id: str) -> str:
    return plain(str(by_id(message, element_id)["text"]))


def texts(message: dict[str, Any]) -> str:
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

    walk(content(message))
    return "\n".join(out)


def test_message_is_a_workflows_envelope_around_an_adaptive_card_1_4() -> None:
    [msg] = cards_of([note(Kind.FIRING)])
    assert msg["type"] == "message"
    [attachment] = msg["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert json.loads(serialize(msg)) == msg


def test_firewall_ip_change_is_one_card_with_the_cause_first_and_consequences_folded() -> None:
    wrong = [note(Kind.FIRING, DriftCode.ROUTE_NEXT_HOP_WRONG, f"peer=nva1/instance={i}/prefix=0.0.0.0/0",
                  message=f"0.0.0.0/0 from nva1 at {i} points to 10.0.3.4, not the firewall",
                  expected="next hop 10.0.3.5", observed="next hop 10.0.3.4") for i in factories.INST]
    gateway = note(Kind.FIRING, DriftCode.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0",
                   message="gateway ergw does not hold 0.0.0.0/0 with the firewall next hop")
    advertising = note(Kind.FIRING, DriftCode.GATEWAY_NOT_ADVERTISING, "gateway=ergw/onprem=10.0.0.12/prefix=0.0.0.0/0",
                       message="gateway ergw does not advertise 0.0.0.0/0")
    [msg] = cards_of([gateway, *wrong, advertising])
    body = content(msg)["body"]
    assert body[0]["style"] == "attention"  # a container style, not a fixed colour
    cause = text_of(msg, "cause")
    assert cause.startswith("ROUTE_NEXT_HOP_WRONG on nva1") and "2 Route Server instances" in cause
    assert "GATEWAY_NOT_LEARNING" in texts(msg) and "GATEWAY_NOT_ADVERTISING" in texts(msg)
    assert texts(msg).index("ROUTE_NEXT_HOP_WRONG") < texts(msg).index("GATEWAY_NOT_LEARNING")
    assert "and 2 consequence(s)" in texts(msg)
    assert "next hop 10.0.3.5" in texts(msg) and "next hop 10.0.3.4" in texts(msg)


def test_card_says_where_in_azure_and_links_work() -> None:
    [msg] = cards_of([note(Kind.FIRING, DriftCode.FIREWALL_UNHEALTHY, "firewall=fw-hub")])
    facts = {f["title"]: f["value"] for f in by_id(msg, "facts")["facts"]}
    assert facts["Subscription"] == "sub-1" and facts["Resource group"] == "rg-hub" and facts["Pass"] == "pass-1"
    urls = [a["url"] for a in content(msg)["actions"]]
    assert urls == [
        "https://portal.azure.com/#resource/subscriptions/sub-1/resourceGroups/rg-hub/providers/"
        "Microsoft.Network/azureFirewalls/fw-hub",
        "https://portal.azure.com/#resource/subscriptions/sub-1/resourceGroups/rg-hub/providers/"
        "Microsoft.Network/virtualHubs/ars-hub",
        "https://reconciler.example/api/drift?target=hub",
        "https://reconciler.example/api/runs/pass-1",
    ]


def test_drift_link_is_the_query_route_with_the_target_encoded() -> None:
    assert Links("http://x").drift("hub weu/1&a=b") == "http://x/api/drift?target=hub%20weu%2F1%26a%3Db"


def test_card_carries_the_runbook_of_its_cause_with_the_targets_names() -> None:
    [msg] = cards_of([note(Kind.FIRING, DriftCode.BRANCH_TO_BRANCH_DISABLED, "route_server=ars-hub")])
    assert text_of(msg, "runbook") == "What to do"
    assert "--routeserver" not in text_of(msg, "check")
    assert "az network routeserver show -g rg-hub -n ars-hub" in text_of(msg, "check")
    assert "Branch-to-branch" in text_of(msg, "blade")
    assert text_of(msg, "fix").startswith("Fix by hand:")


@pytest.mark.parametrize(("why", "said"), [
    ("policy: Azure-side writes are off for this target (policy.azure_writes)", "policy.azure_writes"),
    ("action budget of 5 steps per pass reached", "action budget"),
    ("maintenance window until 2026-11-25T10:00:00+00:00", "maintenance window"),
    ("target suspended: observe and record only", "suspended"),
    ("needs a human (never changed automatically)", "needs a human"),
])
def test_card_says_why_the_reconciler_did_not_act(why: str, said: str) -> None:
    [msg] = cards_of([note(Kind.FIRING, DriftCode.BRANCH_TO_BRANCH_DISABLED, "route_server=ars-hub", why_not=why)])
    assert text_of(msg, "did").startswith("Did nothing:") and said in text_of(msg, "did")
    assert "Fixed by" not in texts(msg)  # the catalogue's fixer is not what happened


def test_card_says_what_the_reconciler_did_and_how_it_went() -> None:
    [msg] = cards_of([note(Kind.FIRING, action="agent_intent nva1: originate 0.0.0.0/0", outcome="not_confirmed")])
    assert text_of(msg, "did") == "Ran agent_intent nva1: originate 0.0.0.0/0: not_confirmed"


def test_resolved_card_is_past_tense_with_when_and_how_long_and_no_stale_observed_value() -> None:
    [msg] = cards_of([note(Kind.RESOLVED, observed="next hop 10.9.9.9", duration_s=3725.0)])
    assert content(msg)["body"][0]["style"] == "good"
    assert text_of(msg, "cause").startswith("Resolved: PEER_DOWN")
    facts = {f["title"]: f["value"] for f in by_id(msg, "facts")["facts"]}
    assert facts["Resolved at"] == "2026-11-25 08:07:00 UTC" and facts["Lasted"] == "1 h 2 min"
    assert "10.9.9.9" not in texts(msg) and "Observed" not in facts
    assert "What to do" not in texts(msg)


@pytest.mark.parametrize(("kind", "word", "style"), [
    (Kind.BLIND, "RECONCILER BLIND", "warning"),
    (Kind.UNBLIND, "RECONCILER CAN SEE AGAIN", "good"),
    (Kind.FLAPPING, "FLAPPING", "warning"),
    (Kind.REMINDER, "STILL FIRING", "attention"),
])
def test_each_kind_has_its_own_word_and_style(kind: Kind, word: str, style: str) -> None:
    [msg] = cards_of([note(kind, DriftCode.OBSERVATION_FAILED, "reconciler=blind", duration_s=60.0)])
    header = content(msg)["body"][0]
    assert header["items"][0]["text"].startswith(f"{word} · ")
    assert header["style"] == style
    assert "color" not in json.dumps(header)


def test_unrelated_drifts_are_separate_cards_most_severe_first() -> None:
    msgs = cards_of([note(Kind.FIRING, DriftCode.PEER_UNEXPECTED, "peer=rogue"),
                     note(Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN, "subnet=hub-vnet:AzureFirewallSubnet/prefix=0.0.0.0/0")])
    assert [text_of(m, "cause").split(" ")[0] for m in msgs] == ["UDR_INVARIANT_BROKEN", "PEER_UNEXPECTED"]


def test_a_flood_of_incidents_is_capped_and_the_overflow_card_fits_28_kb() -> None:
    notes = [note(Kind.FIRING, DriftCode.ROUTE_UNEXPECTED, f"peer=nva1/instance=IN_0/prefix=10.{i}.0.0/16",
                  message="unexpected " + "x" * 300) for i in range(600)]
    msgs = cards_of(notes)
    assert len(msgs) == MAX_CARDS_PER_TARGET
    assert all(len(serialize(m)) <= MAX_BYTES for m in msgs)
    rest = 600 - (MAX_CARDS_PER_TARGET - 1)
    assert f"{rest} more incident(s)" in texts(msgs[-1])
    assert f"FIRING ROUTE_UNEXPECTED × {rest}: nva1 · IN\\_0 · 10." in texts(msgs[-1])  # counted, with examples
    assert len(serialize(msgs[-1])) < 5_000  # a glance, not a wall


def test_one_huge_field_is_clipped_not_allowed_to_hide_everything() -> None:
    [msg] = cards_of([note(Kind.FIRING, observed="10.0.0.0/24 " * 5_000)])
    assert len(serialize(msg)) < 10_000
    assert "…" in texts(msg)


def test_fixed_automatically_notice_says_what_changed_what_was_restored_and_when() -> None:
    fix = AutoFix("hub", DriftCode.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=IN_0/prefix=0.0.0.0/0",
                  "next hop 10.0.1.6", "next hop 10.0.3.4", "agent_intent nva1: originate 0.0.0.0/0 via 10.0.3.4")
    [msg] = cards_of([], fixes=[fix, fix], at=NOW)
    assert content(msg)["body"][0]["style"] == "emphasis"
    assert text_of(msg, "kind") == "FIXED AUTOMATICALLY · hub"
    assert "2026-11-25 08:07:00 UTC" in text_of(msg, "cause")
    shown = plain(texts(msg))
    assert "next hop 10.0.1.6" in shown and "next hop 10.0.3.4" in shown and "agent_intent nva1" in shown


# ---- nothing stops the alerts; no injection ---------------------------------------------------


def test_a_lone_surrogate_does_not_stop_the_cards() -> None:
    """On main, json.dumps(...).encode("utf-8") raised UnicodeEncodeError for the whole pass."""
    bad = note(Kind.FIRING, message="agent said \ud800 oops", observed="\udfff")
    good = note(Kind.FIRING, DriftCode.PEER_UNEXPECTED, "peer=other")
    msgs = cards_of([bad, good])
    assert len(msgs) == 2
    for m in msgs:
        serialize(m).decode("utf-8")
    assert "agent said \ufffd oops" in "".join(texts(m) for m in msgs)


def test_clean_pairs_split_surrogates_and_drops_controls_and_bidi_overrides() -> None:
    assert clean("\ud83d\ude00") == "\U0001f600"
    assert clean("a\x00b\nc\u202ed\u2066e") == "a b cde"


def test_markdown_link_from_an_agent_cannot_become_a_link() -> None:
    evil = "[Sign in](https://evil.example/login) ![x](https://evil.example/p.png) <https://evil.example> www.evil.example"
    [msg] = cards_of([note(Kind.FIRING, message=evil, observed=evil, subject="peer=[Sign in](https://evil.example)")])
    shown = texts(msg)
    for text in shown.split("\n"):
        if text.startswith("https://reconciler.example") or text.startswith("https://portal.azure.com"):
            continue  # our own buttons
        assert not re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", text), text
        assert "https://" not in text and "www.evil" not in text, text
    assert "https\\[:\\]//evil.example" in shown


def test_untrusted_escapes_emphasis_lists_and_headings() -> None:
    assert untrusted("*bold* _it_") == "\\*bold\\* \\_it\\_"
    assert untrusted("- item") == "\\- item"
    assert untrusted("1. first") == "\\1. first"
    assert untrusted("# title") == "\\# title"
