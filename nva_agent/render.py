"""Pure config rendering: FRR running config + BGP intent -> the full config to load.

Owns which config lines the agent manages and the order they are written in. It must not
know how config reaches FRR (no subprocess, no clock, no I/O): text in, text out.

The agent owns only what it wrote, and marks it (everything else is the operator's, kept verbatim):
  * every policy object named `nva-agent-*` (OWNED): the prefix-list of the intent's prefixes, the
    AS-path list of the neighbours' ASNs, the outbound route-map toward Route Server (each entry
    carries a `description`), and the route-map its `network` statements point at;
  * in the default-VRF `router bgp`: `neighbor X remote-as` / `ebgp-multihop` / `solo` for the
    intent's neighbors, `network P route-map nva-agent-originate` (the route-map is the mark: an
    operator's own `network` lines are never removed), and `neighbor X route-map nva-agent-ars-out out`.
The outbound route-map ends in an explicit deny: nothing but the intent's prefixes reaches Route
Server, whatever else the NVA learns or originates (SD-WAN, iBGP, redistribute). If the operator
bound outbound policy of their own on one of the intent's neighbors, rendering refuses
(OutboundConflict) instead of replacing it.
Policy objects are written before `router bgp`: a route-map referenced before it exists
filters everything until bgpd's route-map delay timer (5 s) fires (frr-lab.md pitfall 1).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nva_agent.models import BgpIntent
from nva_agent.state import ip_order, prefix_order
from reconciler.asn import ARS_ASN

OWNED = "nva-agent-"
"""Name prefix of every policy object the agent writes: reserved for it, the operator's are other names."""
PREFIX_LIST = "nva-agent-prefixes"
ASPATH_LIST = "nva-agent-ars-asns"
ROUTE_MAP = "nva-agent-ars-out"
ORIGINATE_MAP = "nva-agent-originate"
MARK = "nva-agent:"
"""Start of the `description` on each route-map entry the agent writes (for the human reading it)."""
# Per-neighbor lines that change what a neighbor is sent outside the outbound route-map: the
# agent refuses (409) rather than overriding or ignoring them. `default-originate` sends
# 0.0.0.0/0 whatever the route-map says; `unsuppress-map` leaks suppressed more-specifics;
# a peer-group carries outbound policy the agent would not see per neighbor.
_OUTBOUND_OVERRIDES = ("default-originate", "unsuppress-map", "peer-group")

_IGNORED = ("Building configuration...", "Current configuration:", "!", "end")
_POLICY_PREFIXES = (
    "ip prefix-list ",
    "ipv6 prefix-list ",
    "bgp as-path access-list ",
    "bgp community-list ",
    "bgp large-community-list ",
    "bgp extcommunity-list ",
    "access-list ",
    "ipv6 access-list ",
    "route-map ",
)
# Anything the agent writes from intent values must look like this; the models already
# parsed them with ipaddress, this is the last line of defence before text reaches vtysh.
_SAFE_TOKEN = re.compile(r"^[0-9./]+$")


class OutboundConflict(ValueError):
    """Outbound policy the agent did not write is bound on an intent neighbor: changing nothing."""

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        super().__init__(
            "outbound policy the agent did not write is bound on a Route Server neighbor; the agent "
            f"will not replace or bypass it (remove it, or rename it out of {OWNED}*): " + "; ".join(conflicts)
        )


class AsnMismatch(ValueError):
    """FRR runs `router bgp` with another AS; changing the AS is a rebuild the agent won't do."""

    def __init__(self, running: int, wanted: int) -> None:
        self.running, self.wanted = running, wanted
        super().__init__(
            f"FRR runs router bgp {running} but the intent says local_asn {wanted}; "
            "changing the local AS tears down every session and is left to a human"
        )


@dataclass(frozen=True)
class Section:
    """A nested block inside `router bgp`, e.g. ` address-family ipv4 unicast`."""

    header: str  # stripped, e.g. "address-family ipv4 unicast"
    lines: tuple[str, ...]  # stripped
    terminator: str  # stripped, e.g. "exit-address-family"


@dataclass(frozen=True)
class Stanza:
    """One top-level item: a single line, or a block (header + body) closed by `exit`."""

    header: str
    body: tuple[str, ...] = ()  # verbatim (indented) lines, for blocks other than router bgp
    block: bool = False
    bgp_lines: tuple[str, ...] = ()  # stripped lines directly under `router bgp`
    sections: tuple[Section, ...] = ()

    @property
    def is_bgp(self) -> bool:
        return self.block and self.header.startswith("router bgp ")


@dataclass(frozen=True)
class Config:
    stanzas: tuple[Stanza, ...] = field(default_factory=tuple)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _meaningful(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.strip() and ln.strip() not in _IGNORED]


def parse(text: str) -> Config:
    """Parse FRR's `show running-config` (or a file we rendered) into stanzas."""
    lines = _meaningful(text)
    stanzas: list[Stanza] = []
    i = 0
    while i < len(lines):
        header = lines[i]
        i += 1
        body: list[str] = []
        is_block = False
        while i < len(lines) and (_indent(lines[i]) > 0 or lines[i] == "exit"):
            is_block = True
            if lines[i] == "exit":
                i += 1
                break
            body.append(lines[i])
            i += 1
        if not is_block:
            stanzas.append(Stanza(header=header))
        elif header.startswith("router bgp "):
            stanzas.append(_parse_bgp(header, body))
        else:
            stanzas.append(Stanza(header=header, body=tuple(body), block=True))
    return Config(tuple(stanzas))


def _parse_bgp(header: str, body: list[str]) -> Stanza:
    top: list[str] = []
    sections: list[Section] = []
    i = 0
    while i < len(body):
        line = body[i]
        nested = i + 1 < len(body) and _indent(body[i + 1]) > _indent(line)
        if not nested and not line.strip().startswith("address-family "):
            top.append(line.strip())
            i += 1
            continue
        depth = _indent(line)
        sub: list[str] = []
        i += 1
        terminator = ""
        while i < len(body):
            if _indent(body[i]) == depth and body[i].strip() in ("exit-address-family", "exit"):
                terminator = body[i].strip()
                i += 1
                break
            if _indent(body[i]) <= depth:
                break
            sub.append(body[i].strip())
            i += 1
        sections.append(Section(line.strip(), tuple(sub), terminator))
    return Stanza(header=header, block=True, bgp_lines=tuple(top), sections=tuple(sections))


# ------------------------------------------------------------------------------- emit ----
def emit(config: Config) -> str:
    """Write a config the way FRR would read it back; policy objects before `router bgp`."""
    out: list[str] = []
    for st in sorted(config.stanzas, key=_rank):  # sorted() is stable: original order within a rank
        if not st.block:
            out.append(st.header)
            continue
        out.append(st.header)
        if st.is_bgp:
            out += [f" {ln}" for ln in st.bgp_lines]
            for sec in st.sections:
                out += [" !", f" {sec.header}", *(f"  {ln}" for ln in sec.lines)]
                if sec.terminator:
                    out.append(f" {sec.terminator}")
        else:
            out += list(st.body)
        out += ["exit", "!"]
    return "\n".join(out) + "\n"


def _rank(st: Stanza) -> int:
    if st.is_bgp:
        return 2
    if st.header.startswith(_POLICY_PREFIXES):
        return 1
    if st.block and st.header.startswith("line "):
        return 3
    return 0


def items(config: Config) -> list[str]:
    """Every config statement with its context, in emitted order: the unit of change."""
    out: list[str] = []
    for st in sorted(config.stanzas, key=_rank):
        if not st.block:
            out.append(st.header)
        elif st.is_bgp:
            out.append(st.header)
            out += [f"{st.header} | {ln}" for ln in st.bgp_lines]
            for sec in st.sections:
                out.append(f"{st.header} | {sec.header}")
                out += [f"{st.header} | {sec.header} | {ln}" for ln in sec.lines]
        else:
            out.append(st.header)
            out += [f"{st.header} | {ln.strip()}" for ln in st.body]
    return out


def changes(old: Config, new: Config) -> list[str]:
    """`- ` lines the new config drops, then `+ ` lines it adds; [] means nothing to do."""
    before, after = items(old), items(new)
    before_set, after_set = set(before), set(after)
    removed = [f"- {_short(i)}" for i in before if i not in after_set]
    added = [f"+ {_short(i)}" for i in after if i not in before_set]
    return removed + added


def _short(item: str) -> str:
    # Inside router bgp the statement alone reads best ("+ network 0.0.0.0/0"); a route-map
    # line needs its entry ("+ route-map rmap-azure-asns permit 10 | set ip next-hop ...").
    if item.startswith("router bgp ") and " | " in item:
        return item.rsplit(" | ", 1)[1]
    return item


def config_hash(text: str) -> str:
    """A stable digest of a running config: FRR's banner lines and `!` separators excluded."""
    return "sha256:" + hashlib.sha256("\n".join(_meaningful(text)).encode()).hexdigest()


# ------------------------------------------------------------------------------ render ----
def _safe(value: str) -> str:
    if not _SAFE_TOKEN.match(value):
        raise ValueError(f"refusing to render {value!r}: not a parsed IPv4 address or prefix")
    return value


def _managed_top(st: Stanza) -> bool:
    return st.header.startswith((f"ip prefix-list {OWNED}", f"bgp as-path access-list {OWNED}", f"route-map {OWNED}"))


def _entry(header: str, description: str, *body: str) -> Stanza:
    return Stanza(header, body=(f" description {MARK} {description}", *(f" {b}" for b in body)), block=True)


def policy_stanzas(intent: BgpIntent) -> list[Stanza]:
    """The prefix-list, AS-path list and route-maps the intent needs, all named nva-agent-*."""
    prefixes = sorted(intent.prefixes, key=prefix_order)
    # DESIGN.md §11 rule 1-2: never hand Azure Route Server its own routes back
    asns = sorted({ARS_ASN, *(n.asn for n in intent.neighbors)} - {intent.local_asn})
    out = [Stanza(f"ip prefix-list {PREFIX_LIST} seq {5 * (i + 1)} permit {_safe(p)}") for i, p in enumerate(prefixes)]
    out += [Stanza(f"bgp as-path access-list {ASPATH_LIST} seq {5 * (i + 1)} permit _{a}_") for i, a in enumerate(asns)]
    out.append(
        _entry(f"route-map {ROUTE_MAP} deny 5", "never send Route Server its routes", f"match as-path {ASPATH_LIST}")
    )
    if prefixes:
        sets = (f"set ip next-hop {_safe(intent.next_hop)}",) if intent.next_hop else ()
        out.append(
            _entry(
                f"route-map {ROUTE_MAP} permit 10",
                "the intent's prefixes",
                f"match ip address prefix-list {PREFIX_LIST}",
                *sets,
            )
        )
    # The explicit end: whatever else the NVA holds (SD-WAN, iBGP, redistributed) is not sent.
    out.append(_entry(f"route-map {ROUTE_MAP} deny 100", "nothing else reaches Route Server"))
    out.append(_entry(f"route-map {ORIGINATE_MAP} permit 10", "marks the network statements the agent wrote"))
    return out


def _neighbor_of(line: str) -> str | None:
    parts = line.split()
    return parts[1] if len(parts) > 2 and parts[0] == "neighbor" else None


def outbound_conflicts(existing: Stanza | None, intent: BgpIntent) -> list[str]:
    """Operator lines that decide what an intent neighbor is sent, outside the agent's route-map."""
    if existing is None:
        return []
    ips = {n.ip for n in intent.neighbors}
    out = []
    lines = [*existing.bgp_lines, *(ln for sec in existing.sections for ln in sec.lines)]
    for ln in lines:
        p = ln.split()
        if _neighbor_of(ln) not in ips:
            continue
        foreign_map = p[2] == "route-map" and len(p) >= 5 and p[4] == "out" and not p[3].startswith(OWNED)
        if foreign_map or p[2] in _OUTBOUND_OVERRIDES:
            out.append(ln)
    return out


def _render_bgp(existing: Stanza | None, intent: BgpIntent) -> Stanza:
    neighbors = sorted(intent.neighbors, key=lambda n: ip_order(n.ip))
    ips = {n.ip for n in neighbors}
    top = list(existing.bgp_lines) if existing else []
    sections = list(existing.sections) if existing else []

    def owned_top(line: str) -> bool:
        p = line.split()
        return _neighbor_of(line) in ips and len(p) >= 3 and p[2] in ("remote-as", "ebgp-multihop", "solo")

    kept_top = [ln for ln in top if not owned_top(ln)]
    managed: dict[str, list[str]] = {}
    for n in neighbors:
        managed[n.ip] = [
            f"neighbor {_safe(n.ip)} remote-as {n.asn}",
            f"neighbor {n.ip} ebgp-multihop 255",  # ARS peers are not on the NVA's subnet
            # `solo` gives each neighbor its own update-group. bgpd delays a re-announcement by
            # 500 ms for a shared update sub-group and 100 ms for a peer alone (measured on 8.4.4:
            # route servers updated ~650 ms vs ~190 ms after the soft clear). It also means "never
            # send a peer its own routes back", which the route-map already enforces for ARS.
            f"neighbor {n.ip} solo",
        ]
    # `remote-as` must come before any other line about the neighbor, or bgpd (reading the
    # file at boot) rejects them: insert each neighbor's managed lines before its first mention.
    new_top: list[str] = []
    for ln in kept_top:
        nb = _neighbor_of(ln)
        if nb in managed:
            new_top += managed.pop(nb)
        new_top.append(ln)
    for n in neighbors:
        new_top += managed.pop(n.ip, [])

    af_header = "address-family ipv4 unicast"
    af = next((s for s in sections if s.header == af_header), None)
    old_af = list(af.lines) if af else []

    def owned_af(line: str) -> bool:
        p = line.split()
        if p[:1] == ["network"]:
            return p[2:] == ["route-map", ORIGINATE_MAP]
        # outbound_conflicts() already refused any other route-map out on these neighbors
        return _neighbor_of(line) in ips and len(p) >= 5 and p[2] == "route-map" and p[4] == "out"

    # An operator's own `network P` for an intent prefix already originates it: kept, not marked.
    originated = {ln.split()[1] for ln in old_af if ln.split()[:1] == ["network"] and not owned_af(ln)}
    af_lines = [
        f"network {_safe(p)} route-map {ORIGINATE_MAP}"
        for p in sorted(intent.prefixes, key=prefix_order)
        if p not in originated
    ]
    af_lines += [ln for ln in old_af if not owned_af(ln)]
    af_lines += [f"neighbor {n.ip} route-map {ROUTE_MAP} out" for n in neighbors]
    new_af = Section(af_header, tuple(af_lines), "exit-address-family")
    # a new AF section goes first: FRR prints ipv4 unicast before the other families
    new_sections = [new_af if s is af else s for s in sections] if af is not None else [new_af, *sections]
    header = existing.header if existing else f"router bgp {intent.local_asn}"
    return Stanza(header=header, block=True, bgp_lines=tuple(new_top), sections=tuple(new_sections))


def _default_bgp(config: Config) -> Stanza | None:
    return next((s for s in config.stanzas if s.is_bgp and len(s.header.split()) == 3), None)


def render(running: str, intent: BgpIntent) -> str:
    """The full config FRR should run: the operator's lines plus the intent's managed lines.

    Deterministic: the same running config and intent always give the same text.
    Raises AsnMismatch when FRR already runs BGP with another local AS, OutboundConflict when
    outbound policy the agent did not write is bound on an intent neighbor.
    """
    config = parse(running)
    existing = _default_bgp(config)
    if existing is not None:
        running_asn = int(existing.header.split()[2])
        if running_asn != intent.local_asn:
            raise AsnMismatch(running_asn, intent.local_asn)
    conflicts = outbound_conflicts(existing, intent)
    if conflicts:
        raise OutboundConflict(conflicts)
    kept = [st for st in config.stanzas if not _managed_top(st) and st is not existing]
    rendered_bgp = _render_bgp(existing, intent)
    stanzas: list[Stanza] = _insert_policy(kept, policy_stanzas(intent))
    if existing is None:
        stanzas.append(rendered_bgp)
    else:  # keep the default VRF's router bgp ahead of any `router bgp N vrf X`
        idx = next((i for i, s in enumerate(stanzas) if s.is_bgp), len(stanzas))
        stanzas.insert(idx, rendered_bgp)
    return emit(Config(tuple(stanzas)))


def _insert_policy(kept: Sequence[Stanza], policy: Iterable[Stanza]) -> list[Stanza]:
    # after the operator's own policy objects, so the rendered order is stable run after run
    out = list(kept)
    last = max((i for i, s in enumerate(out) if _rank(s) == 1), default=len(out) - 1)
    out[last + 1 : last + 1] = list(policy)
    return out


def canonical(running: str) -> str:
    """The running config re-emitted with the agent's ordering, unchanged in content (rollback)."""
    return emit(parse(running))
