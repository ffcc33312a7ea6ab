"""Teams messages: one Adaptive Card 1.4 per incident (and one "fixed automatically" notice per
target and pass), each in its own Workflows webhook envelope.

Owns layout, container styles, links, sanitising and escaping of untrusted text, and the 28 KB
budget. Pure: incidents in, JSON-ready dicts out. Must not know how notifications are decided
(alerts), grouped (incident) or delivered (teams, outbox).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from reconciler.alerts import Kind, Notification
from reconciler.arm_ids import network_id
from reconciler.desired import Target
from reconciler.drift import DriftCode, subject_part
from reconciler.incident import Incident, group
from reconciler.runbook import RUNBOOK, names_for

# Teams rejects webhook messages over 28 KB; stay under it in serialized bytes, with margin for
# the KB-vs-KiB ambiguity in Microsoft's docs.
MAX_BYTES = 28_000
# One huge `observed` (a list of 900 learned prefixes) must not crowd everything else out.
FIELD_CHARS = 600
# Consequences listed by name under their cause; the rest are counted.
MAX_CONSEQUENCES = 12
# Incident cards per target and pass; past it, one more card lists the rest one line each, so a
# flood (600 missing prefixes) is a handful of messages, not hundreds.
MAX_CARDS_PER_TARGET = 8

SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
# Azure portal deep link to a resource: `#resource` + the ARM resource ID, the form Azure Monitor
# itself puts in alert payloads ("portalLink": "https://portal.azure.com/#resource/subscriptions/
# s1/resourceGroups/rg1/providers/..."; learn.microsoft.com, "Use autoscale actions to send email
# and webhook alert notifications", webhook payload schema).
PORTAL = "https://portal.azure.com"

# Per kind: the word on the card, its tense, and the container style. Styles, not text colours:
# the host picks readable foreground/background pairs per style (Teams light: attention #FFC5B2,
# warning #FFE2B2, good #CCFFCC, emphasis #F9F8F7 with #252424 text).
_LOOK: dict[Kind, tuple[str, str]] = {
    Kind.FIRING: ("FIRING", "attention"),
    Kind.REMINDER: ("STILL FIRING", "attention"),
    Kind.FLAPPING: ("FLAPPING", "warning"),
    Kind.BLIND: ("RECONCILER BLIND", "warning"),
    Kind.RESOLVED: ("RESOLVED", "good"),
    Kind.UNBLIND: ("RECONCILER CAN SEE AGAIN", "good"),
}
_ENDED = frozenset({Kind.RESOLVED, Kind.UNBLIND})


@dataclass(frozen=True)
class Links:
    """Where a card's buttons go. `base_url` is this app's public URL (ARS_PUBLIC_BASE_URL)."""

    base_url: str
    portal: str = PORTAL

    def drift(self, target: str) -> str:
        return f"{self.base_url.rstrip('/')}/api/drift?target={quote(target, safe='')}"

    def run(self, pass_id: str) -> str:
        return f"{self.base_url.rstrip('/')}/api/runs/{quote(pass_id, safe='')}"

    def resource(self, resource_id: str) -> str:
        return f"{self.portal.rstrip('/')}/#resource{resource_id}"


@dataclass(frozen=True)
class Card:
    """One message to send: which target it belongs to, a key unique within the pass, and what it
    announces (identity → kind), so a card Teams refuses for good can be un-announced."""

    target: str
    key: str
    message: dict[str, Any]
    announces: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AutoFix:
    """One drift found and fixed within a pass: what had changed, what was restored, by which step."""

    target: str
    code: DriftCode
    subject: str
    was: str  # the observed value that was wrong
    restored: str  # the expected value put back
    step: str  # the step that fixed it, described

    @property
    def identity(self) -> str:
        return f"{self.target}|{self.code.value}|{self.subject}"


# ---- text safety ------------------------------------------------------------------------------

# Bidi overrides and isolates can make a card say something else than its bytes (CVE-2021-42574).
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"))
# Everything Teams' markdown subset (and CommonMark) gives a meaning to.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,20}):(//)")
_WWW = re.compile(r"(?i)\bwww\.")


def clean(text: object, limit: int = FIELD_CHARS) -> str:
    """`text` safe to serialise: lone surrogates replaced, control and bidi characters removed,
    whitespace collapsed to single spaces, clipped to `limit` characters."""
    s = str(text)
    # Pair up surrogates that arrived as two halves; any still alone becomes U+FFFD.
    s = s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    s = s.translate(_BIDI)
    s = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in s)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def untrusted(text: object, limit: int = FIELD_CHARS) -> str:
    """Text from Azure or an agent (names, errors, AS paths), made inert for a markdown renderer:
    no link, image, emphasis or autolinked URL can be formed from it."""
    s = clean(text, limit)
    s = _SCHEME.sub(r"\1[:]\2", s)  # https://x → https[:]//x: no autolinker takes it for a URL
    s = _WWW.sub("www[.]", s)
    s = _MARKDOWN.sub(r"\\\1", s)
    if re.match(r"(\d+[.)]|[-=])(\s|$)", s):
        s = "\\" + s  # a list or setext-heading marker at the start of a block
    return s


def serialize(message: dict[str, Any]) -> bytes:
    """The exact bytes sent (and measured against MAX_BYTES). Raises on anything unencodable, so a
    caller building many cards must serialise each on its own."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def header_texts(message: Any) -> list[str]:
    """The header lines of a message built here (status word · place, then the headline), for a
    reader showing a received message in a line (the local receiver, the demo); [] for anything else."""
    try:
        items = message["attachments"][0]["content"]["body"][0]["items"]
        return [str(item["text"]) for item in items if isinstance(item, dict) and "text" in item]
    except (KeyError, IndexError, TypeError):
        return []


# ---- building ---------------------------------------------------------------------------------


def build_cards(
    notes: Sequence[Notification],
    links: Links,
    targets: Mapping[str, Target],
    pass_id: str,
    fixes: Sequence[AutoFix] = (),
    at: datetime | None = None,
) -> tuple[list[Card], list[str]]:
    """Every card of one pass: incidents (most severe first, per target), then the fixed notices.
    Each card is built on its own: one that fails becomes a plain fallback card and a problem."""
    cards: list[Card] = []
    problems: list[str] = []

    def safe(name: str, key: str, make: Callable[[], dict[str, Any]], announces: tuple[tuple[str, str], ...]) -> None:
        try:
            message = make()
        except Exception as exc:  # a layout bug must not silence the other cards
            problems.append(f"{name}: card {key} could not be built ({type(exc).__name__}: {clean(exc, 200)})")
            message = fallback_card(name, links, pass_id)
        cards.append(Card(name, key, message, announces))

    by_target: dict[str, list[Incident]] = {}
    for incident in group(notes):
        if all(n.folded for n in incident.causes):
            continue  # muted consequences whose cause was announced before: nothing new to say
        by_target.setdefault(incident.target, []).append(incident)
    for name, incidents in sorted(by_target.items()):
        target = targets.get(name)
        shown, rest = incidents[:MAX_CARDS_PER_TARGET], incidents[MAX_CARDS_PER_TARGET:]
        if rest:  # keep room for the overflow card within the per-target cap
            shown, rest = incidents[: MAX_CARDS_PER_TARGET - 1], incidents[MAX_CARDS_PER_TARGET - 1 :]
        for incident in shown:
            said = tuple((n.identity, n.kind.value) for n in incident.members if not n.folded)
            safe(name, incident.key, functools.partial(incident_card, incident, links, target, pass_id), said)
        if rest:
            said = tuple((n.identity, n.kind.value) for i in rest for n in i.members if not n.folded)
            safe(name, "overflow", functools.partial(overflow_card, name, rest, links, target, pass_id), said)
    by_fix: dict[str, list[AutoFix]] = {}
    for fix in fixes:
        by_fix.setdefault(fix.target, []).append(fix)
    for name, mine in sorted(by_fix.items()):
        safe(name, "fixed", functools.partial(fixed_card, name, mine, links, targets.get(name), pass_id, at), ())
    return cards, problems


def fallback_card(name: str, links: Links, pass_id: str) -> dict[str, Any]:
    """A card with nothing from the pass in it but where to look: sent when the real one could not
    be built or serialised, so on-call still hears that something happened."""
    header = {"type": "Container", "style": "warning", "bleed": True, "items": [
        _text(f"ALERT · {clean(name, 120)}", id="kind", weight="Bolder", size="Small"),
        _text("Something changed on this target, but its card could not be built", id="cause", weight="Bolder",
              size="Large", spacing="Small"),
    ]}
    note = _text("Open the drift link for what is open now; /api/health shows the alert step degraded.", id="detail")
    return _envelope([header, note], _actions(links, None, name, pass_id, []))


def incident_card(incident: Incident, links: Links, target: Target | None, pass_id: str) -> dict[str, Any]:
    """One incident: the cause first, its consequences folded under it, what the reconciler did
    (or why not), the runbook, where it is in Azure, and links that work."""
    kind = incident.kind
    cause = incident.causes[0]
    word, style = _LOOK[kind]
    ended = kind in _ENDED
    blind = cause.code == DriftCode.OBSERVATION_FAILED
    where = _where(incident)

    headline = _headline(incident, where)
    header_items: list[dict[str, Any]] = [
        _text(f"{word} · {incident.severity.value} · {clean(incident.target, 120)}", id="kind", weight="Bolder",
              size="Small", spacing="None"),
        _text(headline, id="cause", weight="Bolder", size="Large", spacing="Small"),
    ]
    if incident.consequences:
        header_items.append(_text(f"and {len(incident.consequences)} consequence(s), folded below", spacing="None"))
    body: list[dict[str, Any]] = [{"type": "Container", "style": style, "bleed": True, "items": header_items}]

    facts: list[tuple[str, str]] = []
    if ended:
        facts += [("Resolved at" if not blind else "Seeing again at", _when(cause.at)),
                  ("Lasted", _duration(cause.duration_s)), ("First seen", _when(cause.first_seen))]
    else:
        if not blind:
            facts += [("Expected", untrusted(cause.expected)), ("Observed", untrusted(cause.observed))]
        facts += [("First seen", _when(cause.first_seen)), ("Changed by", untrusted(cause.changed_by, 200))]
        if kind == Kind.REMINDER:
            facts.append(("Firing for", _duration(cause.duration_s)))
    facts += _place(target)
    facts.append(("Pass", clean(pass_id, 64)))
    body.append({"type": "FactSet", "id": "facts", "facts": [{"title": t, "value": v} for t, v in facts if v]})

    if blind or not ended:
        body.append(_text(untrusted(cause.message or cause.code.value), id="detail", spacing="Small"))
    if incident.consequences:
        # Ended: name what ended with it, not its (now stale) present-tense message.
        body.append(_section("Resolved with it" if ended else "Consequences", "consequences"))
        for n in incident.consequences[:MAX_CONSEQUENCES]:
            said = untrusted(_plain_subject(n.subject) if ended else n.message or n.subject, 200)
            body.append(_text(f"• {n.code.value}: {said}", spacing="None"))
        hidden = len(incident.consequences) - MAX_CONSEQUENCES
        if hidden > 0:
            body.append(_text(f"… and {hidden} more (open the drift link)", spacing="None"))

    body.append(_section("Reconciler", "reconciler"))
    body.append(_text(_did(incident), id="did", spacing="None"))
    if not ended:
        body += _runbook(cause.code, target, cause.subject)

    actions = _actions(links, target, incident.target, pass_id, [(n.code, n.subject) for n in incident.members])
    return _envelope(body, actions)


def overflow_card(
    name: str, incidents: Sequence[Incident], links: Links, target: Target | None, pass_id: str
) -> dict[str, Any]:
    """The incidents past MAX_CARDS_PER_TARGET, summed up by kind and code (count and a few
    examples each), so a flood reads in a glance; truncated to fit the budget."""
    worst = incidents[0]
    style = _LOOK[worst.kind][1]
    header = [{
        "type": "Container", "style": style, "bleed": True, "items": [
            _text(f"{len(incidents)} more incident(s) · {clean(name, 120)}", id="kind", weight="Bolder", size="Small"),
            _text("More incidents in this pass than cards allowed, by kind and code", id="cause", weight="Bolder",
                  size="Large", spacing="Small"),
        ],
    }]
    facts = {"type": "FactSet", "id": "facts", "facts": [{"title": t, "value": v} for t, v in _place(target)]}
    actions = _actions(links, target, name, pass_id, [])
    groups: dict[tuple[Kind, DriftCode], list[Incident]] = {}
    for i in incidents:  # already most severe first
        groups.setdefault((i.kind, i.code), []).append(i)
    lines = []
    for (kind, code), items in groups.items():
        examples = ", ".join(untrusted(_plain_subject(i.causes[0].subject), 60) for i in items[:3])
        more = f", and {len(items) - 3} more" if len(items) > 3 else ""
        lines.append(_text(f"• {_LOOK[kind][0]} {code.value} × {len(items)}: {examples}{more}", spacing="Small"))
    kept: list[dict[str, Any]] = []
    for line in lines:
        trial = _envelope([*header, facts, *kept, line, _more(len(lines))], actions)
        if len(serialize(trial)) > MAX_BYTES:
            break
        kept.append(line)
    tail = [_more(len(lines) - len(kept))] if len(kept) < len(lines) else []
    return _envelope([*header, facts, *kept, *tail], actions)


def fixed_card(
    name: str, fixes: Sequence[AutoFix], links: Links, target: Target | None, pass_id: str, at: datetime | None
) -> dict[str, Any]:
    """The compact "fixed automatically" notice of one target and pass: what changed, what was
    restored, when, by which step. Emphasis style: information, not a page."""
    header = {
        "type": "Container", "style": "emphasis", "bleed": True, "items": [
            _text(f"FIXED AUTOMATICALLY · {clean(name, 120)}", id="kind", weight="Bolder", size="Small"),
            _text(f"{len(fixes)} drift(s) found and put back at {_when(at)}", id="cause", weight="Bolder",
                  size="Medium", spacing="Small"),
        ],
    }
    body: list[dict[str, Any]] = [header]
    for fix in fixes[:MAX_CONSEQUENCES]:
        body.append(_text(f"{fix.code.value} · {untrusted(_plain_subject(fix.subject), 160)}", weight="Bolder",
                          spacing="Small"))
        body.append({"type": "FactSet", "spacing": "None", "facts": [
            {"title": "Was", "value": untrusted(fix.was, 200) or "—"},
            {"title": "Restored", "value": untrusted(fix.restored, 200) or "—"},
            {"title": "By", "value": untrusted(fix.step, 200)},
        ]})
    if len(fixes) > MAX_CONSEQUENCES:
        body.append(_more(len(fixes) - MAX_CONSEQUENCES))
    body.append({"type": "FactSet", "id": "facts", "facts": [{"title": t, "value": v} for t, v in
                                                            [*_place(target), ("Pass", clean(pass_id, 64))] if v]})
    return _envelope(body, _actions(links, target, name, pass_id, []))


# ---- parts ------------------------------------------------------------------------------------


def _plain_subject(subject: str) -> str:
    """`peer=nva1/instance=IN_1/prefix=0.0.0.0/0` as `nva1 · IN_1 · 0.0.0.0/0` (values, in order)."""
    values = []
    rest = subject
    while rest:
        if rest.startswith("prefix="):
            values.append(rest[len("prefix="):])
            break
        head, _, rest = rest.partition("/")
        values.append(head.split("=", 1)[-1])
    return " · ".join(v for v in values if v)


def _headline(incident: Incident, where: str) -> str:
    cause = incident.causes[0]
    if cause.code == DriftCode.OBSERVATION_FAILED:
        if incident.kind in _ENDED:
            return f"The reconciler can see {clean(incident.target, 120)} again"
        return f"The reconciler cannot see part of {clean(incident.target, 120)}: nothing there is checked or fixed"
    text = f"{cause.code.value}{where}"
    if incident.kind in _ENDED:
        return f"Resolved: {text}"
    return text


def _where(incident: Incident) -> str:
    """" on nva1 (0.0.0.0/0) at both instances"-style location of the cause, from subjects."""
    subjects = [n.subject for n in incident.causes]
    parts: list[str] = []
    for key in ("route_server", "peer", "gateway", "firewall", "subnet", "onprem"):
        values = sorted({v for s in subjects if (v := subject_part(s, key))})
        if values:
            parts.append(", ".join(untrusted(v, 80) for v in values))
    prefixes = sorted({v for s in subjects if (v := subject_part(s, "prefix"))})
    instances = sorted({v for s in subjects if (v := subject_part(s, "instance"))})
    text = f" on {' '.join(parts)}" if parts else ""
    if prefixes:
        text += f" ({', '.join(untrusted(p, 40) for p in prefixes)})"
    if len(instances) > 1:
        text += f" at {len(instances)} Route Server instances"
    elif instances:
        text += f" at {untrusted(instances[0], 60)}"
    return text


def _did(incident: Incident) -> str:
    """What the reconciler did about the cause this pass, or why it did nothing."""
    cause = incident.causes[0]
    if cause.action is not None:
        outcome = clean(cause.outcome or "unknown", 40)
        text = f"Ran {untrusted(cause.action, 200)}: {outcome}"
        if incident.kind in _ENDED:
            return f"Fixed it: {untrusted(cause.action, 200)} ({outcome})"
        return text
    if incident.kind in _ENDED:
        if cause.code == DriftCode.OBSERVATION_FAILED:
            return "Reads succeed again; checks and fixes resume."
        return "No longer observed; the reconciler did not change it (fixed by hand or by Azure)."
    if cause.why_not:
        return f"Did nothing: {untrusted(cause.why_not, 300)}"
    if cause.code == DriftCode.OBSERVATION_FAILED:
        return "Changes nothing it cannot see: unknown is not absent."
    return "Did nothing this pass."


def _runbook(code: DriftCode, target: Target | None, subject: str) -> list[dict[str, Any]]:
    book = RUNBOOK[code].filled(names_for(target, subject))
    return [
        _section("What to do", "runbook"),
        _text(book.meaning, id="meaning", spacing="None"),
        _text(f"Check: {untrusted(book.check, 400)}", id="check", font="Monospace", spacing="Small"),
        _text(f"Portal: {book.blade}", id="blade", spacing="Small"),
        _text(f"Fix by hand: {clean(book.fix, 400)}", id="fix", spacing="Small"),
    ]


def _place(target: Target | None) -> list[tuple[str, str]]:
    if target is None:
        return []
    return [("Subscription", clean(target.subscription_id, 80)), ("Resource group", clean(target.resource_group, 100)),
            ("Route Server", clean(target.route_server, 100))]


def resource_ids(target: Target, members: Sequence[tuple[DriftCode, str]]) -> list[tuple[str, str]]:
    """(label, ARM resource ID) of each resource the drifts (code, subject) name, in their order
    (the cause's first); the Route Server is always among them."""

    def rid(rg: str | None, kind: str, name: str) -> str:
        return network_id(target.subscription_id, rg or target.resource_group, kind, name, segment=_seg)

    found: dict[str, str] = {}
    for code, s in members:
        names_firewall = subject_part(s, "firewall") or code == DriftCode.ROUTE_NEXT_HOP_WRONG
        if names_firewall and target.firewall.name:
            found.setdefault(target.firewall.name,
                             rid(target.firewall.resource_group, "azureFirewalls", target.firewall.name))
        if subject_part(s, "route_server") or subject_part(s, "peer"):
            # A Route Server is a virtualHubs resource (notes/azure-api.md §3.1); peers live on it.
            found.setdefault(target.route_server, rid(None, "virtualHubs", target.route_server))
        if gw := subject_part(s, "gateway"):
            declared = next((g for g in target.gateways if g.name == gw), None)
            if declared is not None:
                found.setdefault(gw, rid(declared.resource_group, "virtualNetworkGateways", gw))
        if (subnet := subject_part(s, "subnet")) and ":" in subnet:
            vnet = subnet.split(":", 1)[0]
            declared_sn = next((n for n in target.subnets if n.vnet == vnet), None)
            found.setdefault(vnet, rid(declared_sn.resource_group if declared_sn else None, "virtualNetworks", vnet))
    found.setdefault(target.route_server, rid(None, "virtualHubs", target.route_server))
    return list(found.items())


def _seg(name: str) -> str:
    return quote(name, safe="-_.()")


def _actions(
    links: Links, target: Target | None, name: str, pass_id: str, members: Sequence[tuple[DriftCode, str]]
) -> list[Any]:
    actions: list[dict[str, Any]] = []
    if target is not None:
        for label, rid in resource_ids(target, members)[:2]:
            actions.append({"type": "Action.OpenUrl", "title": f"Portal: {clean(label, 40)}",
                            "url": links.resource(rid)})
    actions.append({"type": "Action.OpenUrl", "title": "Open drift", "url": links.drift(name)})
    actions.append({"type": "Action.OpenUrl", "title": "Pass report", "url": links.run(pass_id)})
    return actions


def _text(text: str, *, id: str | None = None, weight: str | None = None, size: str | None = None,
          spacing: str | None = None, font: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "TextBlock", "text": text, "wrap": True}
    if id:
        block["id"] = id
    if weight:
        block["weight"] = weight
    if size:
        block["size"] = size
    if spacing:
        block["spacing"] = spacing
    if font:
        block["fontType"] = font
    return block


def _section(title: str, id: str) -> dict[str, Any]:
    return {"type": "TextBlock", "id": id, "text": title, "weight": "Bolder", "separator": True,
            "spacing": "Medium", "wrap": True}


def _more(hidden: int) -> dict[str, Any]:
    return _text(f"… and {hidden} more (open the drift link for all)", id="more", spacing="Small")


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


def _when(at: datetime | None) -> str:
    if at is None:
        return ""
    if at.utcoffset() is None:
        return at.isoformat()
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    if not days and not hours:
        parts.append(f"{secs} s" if secs or not minutes else "")
    return " ".join(p for p in parts if p)
