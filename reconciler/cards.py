"""Teams messages: one Adaptive Card 1.4 per target per pass, in the Workflows webhook envelope.

Owns layout, colours and the 28 KB budget. Pure: notifications in, JSON-ready dicts and bytes out.
Must not know how notifications are decided (alerts) or delivered (teams, outbox).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from reconciler.alerts import Kind, Notification
from reconciler.drift import FIXER

# Teams rejects webhook messages over 28 KB; stay under it in serialized bytes, with margin for
# the KB-vs-KiB ambiguity in Microsoft's docs.
MAX_BYTES = 28_000
# One huge `observed` (a list of 900 learned prefixes) must not crowd every other alert out.
FIELD_CHARS = 600

SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

# Per kind: section title, container style, text colour. Firing reads red, resolved green,
# flapping/blind amber, so a glance at the channel tells them apart.
_LOOK: dict[Kind, tuple[str, str, str]] = {
    Kind.BLIND: ("Reconciler blind", "warning", "Warning"),
    Kind.FIRING: ("Firing", "attention", "Attention"),
    Kind.FLAPPING: ("Flapping", "warning", "Warning"),
    Kind.REMINDER: ("Still firing", "attention", "Attention"),
    Kind.UNBLIND: ("Reconciler can see again", "good", "Good"),
    Kind.RESOLVED: ("Resolved", "good", "Good"),
}
_ORDER = list(_LOOK)  # most urgent first: a truncated card drops resolutions before firings


def serialize(message: dict[str, Any]) -> bytes:
    """The exact bytes sent (and measured against MAX_BYTES)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def drift_link(drift_url: str, target: str) -> str:
    return f"{drift_url.rstrip('/')}/{quote(target, safe='')}"


def build_messages(
    notifications: Iterable[Notification], drift_url: str, max_bytes: int = MAX_BYTES
) -> dict[str, dict[str, Any]]:
    """One message per target that has anything to say, keyed by target."""
    by_target: dict[str, list[Notification]] = {}
    for note in notifications:
        by_target.setdefault(note.target, []).append(note)
    return {t: build_message(t, notes, drift_url, max_bytes) for t, notes in sorted(by_target.items())}


def build_message(
    target: str, notifications: Sequence[Notification], drift_url: str, max_bytes: int = MAX_BYTES
) -> dict[str, Any]:
    """The Workflows envelope around one card for `target`; truncated with "and N more" past `max_bytes`."""
    if not notifications:
        raise ValueError("a message needs at least one notification")
    if any(n.target != target for n in notifications):
        raise ValueError(f"every notification must belong to target {target!r}")
    notes = sorted(notifications, key=lambda n: (_ORDER.index(n.kind), n.identity))

    blocks: list[list[dict[str, Any]]] = []
    previous: Kind | None = None
    for note in notes:
        block: list[dict[str, Any]] = []
        if note.kind != previous:
            block.append(_section_title(note.kind, sum(1 for n in notes if n.kind == note.kind)))
            previous = note.kind
        block.append(_item(note))
        blocks.append(block)

    header = _header(target, notes)
    link = drift_link(drift_url, target)
    actions = [{"type": "Action.OpenUrl", "title": f"Open drift of {target}", "url": link}]
    full = _envelope([*header, *(e for b in blocks for e in b)], actions)
    if len(serialize(full)) <= max_bytes:
        return full

    # Greedy by measured size: every element costs its JSON plus one comma in the body array.
    more = _more(len(notes))
    budget = max_bytes - len(serialize(_envelope([*header, more], actions)))
    kept: list[dict[str, Any]] = []
    for block in blocks:
        cost = sum(len(serialize(e)) + 1 for e in block)
        if cost > budget:
            break
        kept.extend(block)
        budget -= cost
    message = _truncated(header, kept, actions, len(notes))
    while len(serialize(message)) > max_bytes and kept:  # defensive: the estimate above is exact today
        kept.pop()
        message = _truncated(header, kept, actions, len(notes))
    return message


def _truncated(
    header: list[dict[str, Any]], kept: list[dict[str, Any]], actions: list[dict[str, Any]], total: int
) -> dict[str, Any]:
    shown = sum(1 for e in kept if str(e.get("id", "")).startswith("alert-"))
    return _envelope([*header, *kept, _more(total - shown)], actions)


def _envelope(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    card = {
        "$schema": SCHEMA,
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},  # Teams-only hint; other hosts ignore it
        "body": body,
        "actions": actions,
    }
    attachment = {"contentType": CONTENT_TYPE, "contentUrl": None, "content": card}
    return {"type": "message", "attachments": [attachment]}


def _header(target: str, notes: Sequence[Notification]) -> list[dict[str, Any]]:
    counts = {k: sum(1 for n in notes if n.kind == k) for k in _ORDER}
    worst = next(k for k in _ORDER if counts[k])
    title, style, colour = _LOOK[worst]
    summary = ", ".join(f"{counts[k]} {_LOOK[k][0].lower()}" for k in _ORDER if counts[k])
    return [
        {
            "type": "Container",
            "style": style,
            "bleed": True,
            "items": [
                {
                    "type": "TextBlock", "text": f"{title.upper()}: {target}", "weight": "Bolder",
                    "size": "Large", "color": colour, "wrap": True,
                },
                {"type": "TextBlock", "text": summary, "isSubtle": True, "spacing": "None", "wrap": True},
            ],
        }
    ]


def _section_title(kind: Kind, count: int) -> dict[str, Any]:
    title, _, colour = _LOOK[kind]
    return {
        "type": "TextBlock", "text": f"{title} ({count})", "weight": "Bolder", "color": colour,
        "separator": True, "spacing": "Medium", "wrap": True,
    }


def _item(note: Notification) -> dict[str, Any]:
    _, style, colour = _LOOK[note.kind]
    facts = [
        ("Severity", note.severity.value),
        ("Expected", note.expected),
        ("Observed", note.observed),
        ("First seen", _when(note.first_seen)),
        ("Changed by", note.changed_by),
    ]
    if note.duration_s is not None:
        ended = note.kind in (Kind.RESOLVED, Kind.UNBLIND)
        facts.append(("Lasted" if ended else "For", _duration(note.duration_s)))
    facts.append(("Fixed by", FIXER[note.code].value.replace("_", " ")))
    if note.action is not None:
        facts.append(("Reconciler did", note.action))
    if note.outcome is not None:
        facts.append(("Outcome", note.outcome))
    return {
        "type": "Container",
        "id": f"alert-{_short_id(note.identity)}",
        "style": style,
        "items": [
            {"type": "TextBlock", "text": note.code.value, "weight": "Bolder", "color": colour, "wrap": True},
            {
                "type": "TextBlock", "text": _clip(note.subject), "fontType": "Monospace", "isSubtle": True,
                "spacing": "None", "wrap": True,
            },
            {"type": "TextBlock", "text": _clip(note.message or note.code.value), "wrap": True},
            {"type": "FactSet", "facts": [{"title": t, "value": _clip(v)} for t, v in facts if v]},
        ],
    }


def _more(hidden: int) -> dict[str, Any]:
    return {
        "type": "TextBlock", "text": f"… and {hidden} more (open the drift link for all)", "isSubtle": True,
        "wrap": True, "separator": True,
    }


def _short_id(identity: str) -> str:
    # Element ids must be unique within a card; identities contain characters ids should not.
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _clip(text: str) -> str:
    return text if len(text) <= FIELD_CHARS else text[: FIELD_CHARS - 1] + "…"


def _when(at: datetime) -> str:
    if at.utcoffset() is None:
        return at.isoformat()
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    if not days and not hours:
        parts.append(f"{secs} s" if secs or not minutes else "")
    return " ".join(p for p in parts if p)
