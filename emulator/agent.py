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
import json
from typing import Any

from .derive import nva_sends
from .world import Announcement, Nva, NvaNeighbor, World

INTENT_FIELDS = {"local_asn", "neighbors", "prefixes", "next_hop", "dry_run"}
REQUIRED_INTENT_FIELDS = INTENT_FIELDS - {"dry_run"}
NEIGHBOR_FIELDS = {"ip", "asn"}
MAX_ASN = 4_294_967_295


class IntentError(ValueError):
    """The intent body is invalid; the message names the field (answered with 422)."""


@dataclasses.dataclass(frozen=True)
class Intent:
    local_asn: int
    neighbors: tuple[NvaNeighbor, ...]
    prefixes: tuple[str, ...]
    next_hop: str
    dry_run: bool


def health() -> dict[str, Any]:
    return {"status": "ok", "frr": True}


def configured_neighbors(world: World, nva: Nva) -> list[NvaNeighbor]:
    """The NVA's neighbor config; by default one per instance of every ARS that has a connection to it."""
    if nva.neighbors is not None:
        return list(nva.neighbors)
    out: list[NvaNeighbor] = []
    for rs, _conn in world.connections_to(nva.ip):
        out += [NvaNeighbor(ip, rs.asn) for ip in rs.ips if all(n.ip != ip for n in out)]
    return out


def established(world: World, nva: Nva, neighbor_ip: str) -> bool:
    """A session is up iff ARS has a connection to this NVA and that instance is connected."""
    for rs, conn in world.connections_to(nva.ip):
        if neighbor_ip in rs.ips and rs.ips.index(neighbor_ip) in conn.connected_instances:
            return True
    return False


def state(world: World, nva: Nva, uptime_ms: int) -> dict[str, Any]:
    sends = [{"prefix": p, "next_hop": nh, "as_path": path} for p, nh, path in nva_sends(nva)]
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
    config = {
        "asn": nva.asn,
        "neighbors": [[n.ip, n.asn] for n in configured_neighbors(world, nva)],
        "networks": [[a.prefix, a.next_hop, a.as_path] for a in nva.announcements],
        "out_filter": nva.out_filter,
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest}"


def parse_intent(body: Any) -> Intent:
    if not isinstance(body, dict):
        raise IntentError("$: expected a JSON object")
    unknown = set(body) - INTENT_FIELDS
    if unknown:
        raise IntentError(f"$: unknown field(s) {sorted(unknown)}")
    missing = REQUIRED_INTENT_FIELDS - set(body)
    if missing:
        raise IntentError(f"$: missing field(s) {sorted(missing)}")
    local_asn = _asn(body["local_asn"], "$.local_asn")
    if not isinstance(body["neighbors"], list):
        raise IntentError("$.neighbors: expected a list")
    neighbors: list[NvaNeighbor] = []
    for i, n in enumerate(body["neighbors"]):
        where = f"$.neighbors[{i}]"
        if not isinstance(n, dict):
            raise IntentError(f"{where}: expected an object")
        if set(n) != NEIGHBOR_FIELDS:
            raise IntentError(f"{where}: expected exactly the fields {sorted(NEIGHBOR_FIELDS)}")
        ip = _ip(n["ip"], f"{where}.ip")
        if any(x.ip == ip for x in neighbors):
            raise IntentError(f"{where}.ip: duplicate neighbor {ip}")
        neighbors.append(NvaNeighbor(ip, _asn(n["asn"], f"{where}.asn")))
    if not isinstance(body["prefixes"], list):
        raise IntentError("$.prefixes: expected a list")
    prefixes: list[str] = []
    for i, p in enumerate(body["prefixes"]):
        if not isinstance(p, str):
            raise IntentError(f"$.prefixes[{i}]: expected a string")
        try:
            net = str(ipaddress.ip_network(p, strict=True))
        except ValueError as exc:
            raise IntentError(f"$.prefixes[{i}]: {p!r} is not a CIDR prefix") from exc
        if net not in prefixes:
            prefixes.append(net)
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise IntentError("$.dry_run: expected true or false")
    return Intent(local_asn, tuple(neighbors), tuple(prefixes), _ip(body["next_hop"], "$.next_hop"), dry_run)


def apply_intent(world: World, nva: Nva, intent: Intent, uptime_ms: int) -> dict[str, Any]:
    """Compute the FRR-ish change list, apply it unless dry-run, and answer with the new state."""
    changes = _changes(world, nva, intent)
    apply = bool(changes) and not intent.dry_run
    if apply:
        nva.asn = intent.local_asn
        nva.neighbors = list(intent.neighbors)
        nva.announcements = [Announcement(p, intent.next_hop, str(intent.local_asn)) for p in intent.prefixes]
        nva.out_filter = True
        for rs, conn in world.connections_to(nva.ip):
            # Instance index = position of the neighbor IP among the route server's IPs.
            conn.connected_instances = sorted(
                i
                for i, ip in enumerate(rs.ips)
                if any(n.ip == ip and n.asn == rs.asn for n in intent.neighbors)
            )
    if not changes:
        message = "already in the desired state"
    elif intent.dry_run:
        message = f"dry run: {len(changes)} change(s) would be applied"
    else:
        message = f"applied {len(changes)} change(s); read-back matches"
    return {
        "changed": bool(changes),
        "applied": apply,
        "rolled_back": False,
        "dry_run": intent.dry_run,
        "changes": changes,
        "state": state(world, nva, uptime_ms),
        "message": message,
    }


def _changes(world: World, nva: Nva, intent: Intent) -> list[str]:
    changes: list[str] = []
    if intent.local_asn != nva.asn:
        changes.append(f"~ router bgp {nva.asn} -> {intent.local_asn}")
    current = {n.ip: n.asn for n in configured_neighbors(world, nva)}
    for n in intent.neighbors:
        if current.get(n.ip) != n.asn:
            changes.append(f"+ neighbor {n.ip} remote-as {n.asn}")
        elif _reachable(world, nva, n.ip) and not established(world, nva, n.ip):
            # Configured but down while ARS has a connection for it: the agent resets the session.
            changes.append(f"~ clear bgp {n.ip}")
    wanted = {n.ip for n in intent.neighbors}
    changes += [f"- neighbor {ip}" for ip in current if ip not in wanted]
    have = {a.prefix: a for a in nva.announcements}
    path = str(intent.local_asn)
    for p in intent.prefixes:
        a = have.get(p)
        if a is None:
            changes.append(f"+ network {p}")
        elif a.next_hop != intent.next_hop:
            changes.append(f"~ route-map next-hop {p} {a.next_hop} -> {intent.next_hop}")
        elif a.as_path != path:
            changes.append(f"~ as-path {p} {a.as_path!r} -> {path!r}")
    changes += [f"- network {p}" for p in have if p not in intent.prefixes]
    if not nva.out_filter:
        changes.append("+ route-map rmap-azure-asns out (deny as-path 65515)")
    return changes


def _reachable(world: World, nva: Nva, neighbor_ip: str) -> bool:
    return any(neighbor_ip in rs.ips for rs, _conn in world.connections_to(nva.ip))


def _asn(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ASN:
        raise IntentError(f"{where}: expected an ASN between 1 and {MAX_ASN}")
    return value


def _ip(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise IntentError(f"{where}: expected an IP address string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise IntentError(f"{where}: {value!r} is not an IP address") from exc
