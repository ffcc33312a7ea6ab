"""The NVA agent contract, emulated over the world so the pure-Python demo can remediate without FRR.

Owns the agent's JSON shapes (`/v1/health`, `/v1/state`, `PUT /v1/bgp/intent`), strict intent
validation (422 with the offending path) and what applying an intent does to the world. The real
agent (nva_agent/, on FRR) keeps to the same contract. It must not know HTTP plumbing or faults;
callers hold the world lock and serialise intents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from typing import Any

from .derive import nva_sends
from .world import Announcement, BgpConnection, Nva, NvaNeighbor, World

INTENT_FIELDS = {"local_asn", "neighbors", "prefixes", "next_hop", "dry_run"}
REQUIRED_INTENT_FIELDS = {"local_asn", "neighbors", "prefixes"}
NEIGHBOR_FIELDS = {"ip", "asn"}
MAX_ASN = 4_294_967_295
MAX_NEIGHBORS, MAX_PREFIXES = 16, 256
# ASNs an NVA must not use as its own (same list as nva_agent.models): AS_TRANS, documentation
# ranges, the last ASN of each space, and the ASNs Azure reserves (65515 is ARS).
RESERVED_LOCAL_ASNS = (
    (23456, 23456),
    (64496, 64511),
    (65515, 65515),
    (65517, 65520),
    (65535, 65535),
    (65536, 65551),
    (MAX_ASN, MAX_ASN),
)
OUT_FILTER = "route-map rmap-azure-asns deny 5 | match as-path 65515"


class IntentError(ValueError):
    """The intent body is invalid (answered with 422). `loc` is the FastAPI-style location."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = ("body", *loc)


class IntentConflict(Exception):
    """The intent cannot be applied as asked, e.g. another local AS (answered with 409)."""


@dataclasses.dataclass(frozen=True)
class Intent:
    local_asn: int
    neighbors: tuple[NvaNeighbor, ...]
    prefixes: tuple[str, ...]
    next_hop: str | None
    dry_run: bool


def health() -> dict[str, Any]:
    return {"status": "ok", "frr": True}


def configured_neighbors(world: World, nva: Nva) -> list[NvaNeighbor]:
    """The NVA's neighbor config. By default: the ARS instances whose session with it is up.

    (So a world that drops an instance from `connected_instances` models the usual cause, a neighbor
    missing from the NVA's config, which an intent then adds back.)
    """
    if nva.neighbors is not None:
        return sorted(nva.neighbors, key=lambda n: _ip_key(n.ip))
    out: list[NvaNeighbor] = []
    for rs, conn in world.connections_to(nva.ip):
        for i in conn.connected_instances:
            if 0 <= i < len(rs.ips) and all(n.ip != rs.ips[i] for n in out):
                out.append(NvaNeighbor(rs.ips[i], rs.asn))
    return sorted(out, key=lambda n: _ip_key(n.ip))


def established(world: World, nva: Nva, neighbor_ip: str) -> bool:
    """A session is up iff ARS has a connection to this NVA and that instance is connected."""
    for rs, conn in world.connections_to(nva.ip):
        if neighbor_ip in rs.ips and rs.ips.index(neighbor_ip) in conn.connected_instances:
            return True
    return False


def state(world: World, nva: Nva, uptime_ms: int) -> dict[str, Any]:
    sends = sorted(
        ({"prefix": p, "next_hop": nh, "as_path": path} for p, nh, path in nva_sends(nva)),
        key=lambda r: _prefix_key(r["prefix"]),
    )
    neighbors = []
    for n in configured_neighbors(world, nva):
        up = established(world, nva, n.ip)
        neighbors.append(
            {
                "ip": n.ip,
                "remote_asn": n.asn,
                # "Active" is FRR's word for "configured, trying to connect".
                "state": "Established" if up else "Active",
                "uptime_ms": uptime_ms if up else 0,
                "advertised": list(sends) if up else [],
            }
        )
    return {
        "local_asn": nva.asn,
        "router_id": nva.ip,
        "config_hash": config_hash(world, nva),
        "neighbors": neighbors,
    }


def config_hash(world: World, nva: Nva) -> str:
    return "sha256:" + hashlib.sha256("\n".join(_config_lines(world, nva)).encode()).hexdigest()


def parse_intent(body: Any) -> Intent:
    """Validate like the real agent (nva_agent.models.BgpIntent): strict types, IPv4 only, no extras."""
    if not isinstance(body, dict):
        raise IntentError((), "expected a JSON object")
    unknown = sorted(set(body) - INTENT_FIELDS)
    if unknown:
        raise IntentError((unknown[0],), "extra inputs are not permitted")
    for name in sorted(REQUIRED_INTENT_FIELDS - set(body)):
        raise IntentError((name,), "field required")
    local_asn = _asn(body["local_asn"], ("local_asn",))
    for low, high in RESERVED_LOCAL_ASNS:
        if low <= local_asn <= high:
            raise IntentError(("local_asn",), f"AS {local_asn} is reserved and cannot be the NVA's own AS")
    raw_neighbors = body["neighbors"]
    if not isinstance(raw_neighbors, list) or not 1 <= len(raw_neighbors) <= MAX_NEIGHBORS:
        raise IntentError(("neighbors",), f"expected a list of 1 to {MAX_NEIGHBORS} neighbors")
    neighbors: list[NvaNeighbor] = []
    for i, n in enumerate(raw_neighbors):
        if not isinstance(n, dict):
            raise IntentError(("neighbors", i), "expected an object")
        extra = sorted(set(n) - NEIGHBOR_FIELDS)
        if extra:
            raise IntentError(("neighbors", i, extra[0]), "extra inputs are not permitted")
        for name in sorted(NEIGHBOR_FIELDS - set(n)):
            raise IntentError(("neighbors", i, name), "field required")
        neighbors.append(NvaNeighbor(_ipv4(n["ip"], ("neighbors", i, "ip")), _asn(n["asn"], ("neighbors", i, "asn"))))
    if len({n.ip for n in neighbors}) != len(neighbors):
        raise IntentError(("neighbors",), "neighbor IPs must be unique")
    raw_prefixes = body["prefixes"]
    if not isinstance(raw_prefixes, list) or len(raw_prefixes) > MAX_PREFIXES:
        raise IntentError(("prefixes",), f"expected a list of at most {MAX_PREFIXES} prefixes")
    prefixes = [_prefix(p, ("prefixes", i)) for i, p in enumerate(raw_prefixes)]
    if len(set(prefixes)) != len(prefixes):
        raise IntentError(("prefixes",), "prefixes must be unique")
    raw_next_hop = body.get("next_hop")
    next_hop = None if raw_next_hop is None else _ipv4(raw_next_hop, ("next_hop",))
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise IntentError(("dry_run",), "expected true or false")
    return Intent(local_asn, tuple(neighbors), tuple(prefixes), next_hop, dry_run)


def apply_intent(world: World, nva: Nva, intent: Intent, uptime_ms: int) -> dict[str, Any]:
    """Apply like the real agent: diff the config, apply unless dry-run, read back, roll back on mismatch.

    Raises IntentConflict when the NVA runs another local AS (the real agent answers 409).
    """
    if intent.local_asn != nva.asn:
        raise IntentConflict(
            f"FRR runs router bgp {nva.asn} but the intent says local_asn {intent.local_asn}; "
            "changing the local AS tears down every session and is left to a human"
        )
    before = _config_lines(world, nva)
    saved = _snapshot(world, nva)
    _write(world, nva, intent)
    after = _config_lines(world, nva)
    changes = [f"- {line}" for line in before if line not in after] + [
        f"+ {line}" for line in after if line not in before
    ]
    applied = rolled_back = False
    if not changes or intent.dry_run:
        _restore(world, nva, saved)
        issues = _problems(world, nva, intent) if not changes else []
        if not changes:
            message = "config already matches the intent; nothing applied"
            message += f"; read-back: {'; '.join(issues)}" if issues else ""
        else:
            message = f"dry run: {len(changes)} change(s) validated; nothing applied"
    else:
        issues = _problems(world, nva, intent)
        if issues:
            # A neighbor ARS has no connection for never comes up: the real agent gives up and restores.
            _restore(world, nva, saved)
            rolled_back = True
            message = f"read-back did not match ({'; '.join(issues)}); previous config restored"
        else:
            applied = True
            message = f"applied {len(changes)} change(s); every neighbor advertises the intent"
    return {
        "changed": bool(changes),
        "applied": applied,
        "rolled_back": rolled_back,
        "dry_run": intent.dry_run,
        "changes": changes,
        "state": state(world, nva, uptime_ms),
        "message": message,
    }


# ---- the emulated NVA's "config" -----------------------------------------------------------------


def _config_lines(world: World, nva: Nva) -> list[str]:
    """FRR-like config statements, so changes read like the real agent's `+ `/`- ` lines."""
    lines = [f"router bgp {nva.asn}"]
    lines += [f"neighbor {n.ip} remote-as {n.asn}" for n in configured_neighbors(world, nva)]
    for a in sorted(nva.announcements, key=lambda a: _prefix_key(a.prefix)):
        lines.append(f"network {a.prefix}")
        if a.next_hop != nva.ip:
            lines.append(f"route-map rmap-azure-asns permit 10 | match {a.prefix} | set ip next-hop {a.next_hop}")
        if a.as_path != str(nva.asn):
            lines.append(f"route-map rmap-azure-asns permit 10 | match {a.prefix} | as-path {a.as_path!r}")
    if nva.out_filter:
        lines.append(OUT_FILTER)
    return lines


_Snapshot = tuple[list[Announcement], list[NvaNeighbor] | None, bool, list[tuple[BgpConnection, list[int]]]]


def _snapshot(world: World, nva: Nva) -> _Snapshot:
    conns = [(c, list(c.connected_instances)) for _rs, c in world.connections_to(nva.ip)]
    return list(nva.announcements), None if nva.neighbors is None else list(nva.neighbors), nva.out_filter, conns


def _restore(world: World, nva: Nva, saved: _Snapshot) -> None:
    nva.announcements, nva.neighbors, nva.out_filter, conns = saved
    for conn, instances in conns:
        conn.connected_instances = instances


def _write(world: World, nva: Nva, intent: Intent) -> None:
    next_hop = intent.next_hop or nva.ip  # no next-hop rule: FRR sends its own address
    nva.neighbors = list(intent.neighbors)
    nva.announcements = [Announcement(p, next_hop, str(intent.local_asn)) for p in intent.prefixes]
    nva.out_filter = True
    for rs, conn in world.connections_to(nva.ip):
        # Instance index = position of the neighbor IP among the route server's IPs.
        conn.connected_instances = sorted(
            i for i, ip in enumerate(rs.ips) if any(n.ip == ip and n.asn == rs.asn for n in intent.neighbors)
        )


def _problems(world: World, nva: Nva, intent: Intent) -> list[str]:
    """Why the NVA does not (yet) carry the intent, as the real agent's read-back words it."""
    out = []
    configured = {n.ip for n in configured_neighbors(world, nva)}
    for n in intent.neighbors:
        if n.ip not in configured:
            out.append(f"neighbor {n.ip} is not configured")
        elif not established(world, nva, n.ip):
            out.append(f"neighbor {n.ip} is Active, not Established")
    return out


def _ip_key(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def _prefix_key(p: str) -> tuple[int, int]:
    n = ipaddress.ip_network(p)
    return int(n.network_address), n.prefixlen


def _asn(value: Any, loc: tuple[str | int, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ASN:
        raise IntentError(loc, f"expected an integer ASN between 1 and {MAX_ASN}")
    return value


def _ipv4(value: Any, loc: tuple[str | int, ...]) -> str:
    if not isinstance(value, str):
        raise IntentError(loc, "expected an IPv4 address string")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError as exc:
        raise IntentError(loc, f"{value!r} is not an IPv4 address") from exc


def _prefix(value: Any, loc: tuple[str | int, ...]) -> str:
    if not isinstance(value, str) or "/" not in value:
        raise IntentError(loc, "expected an IPv4 prefix with a length, e.g. 0.0.0.0/0")
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        raise IntentError(loc, f"{value!r} is not an IPv4 prefix") from exc
