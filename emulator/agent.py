"""The NVA agent contract, emulated over the world so the pure-Python demo can remediate without FRR.

Owns what applying an intent does to the world. The JSON shapes (`/v1/health`, `/v1/state`,
`PUT /v1/bgp/intent`), validation and the local policy are the real agent's own code
(nva_agent.models, nva_agent.policy), so both speak one contract: 422 with the offending path,
403 naming the policy rule, 409 listing the conflict. It must not know HTTP plumbing or faults;
callers hold the world lock and serialise intents.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from pydantic import ValidationError

from nva_agent import policy, render
from nva_agent.models import (
    AdvertisedRoute,
    AgentState,
    BgpIntent,
    ConflictBody,
    Health,
    IntentResult,
    NeighborState,
    PolicyRefusal,
)
from nva_agent.state import ip_order, prefix_order, problems

from .derive import nva_sends
from .world import AgentPolicy, Announcement, BgpConnection, Nva, NvaNeighbor, World

OUT_FILTER = f"route-map {render.ROUTE_MAP} deny 5 | match as-path {render.ASPATH_LIST}"


class IntentError(ValueError):
    """The intent body is invalid (answered with 422). `loc` is the FastAPI-style location."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = ("body", *loc)


class Refused(Exception):
    """The intent is refused and the world untouched; `status` and `body` are the real agent's."""

    status = 400

    def body(self) -> dict[str, Any]:
        return {"detail": str(self)}


class IntentConflict(Refused):
    """The intent cannot be applied as asked, e.g. another local AS (answered with 409)."""

    status = 409

    def __init__(self, detail: str, conflicts: list[str]) -> None:
        super().__init__(detail)
        self.conflicts = conflicts

    def body(self) -> dict[str, Any]:
        return ConflictBody(detail=str(self), conflicts=self.conflicts).model_dump()


class PolicyRefused(Refused):
    """Outside the NVA's policy (answered with 403 naming the rule)."""

    status = 403

    def __init__(self, violation: policy.PolicyViolation) -> None:
        super().__init__(violation.detail)
        self.violation = violation

    def body(self) -> dict[str, Any]:
        return PolicyRefusal(detail=self.violation.detail, rule=self.violation.rule.value).model_dump()


def health() -> dict[str, Any]:
    return Health(status="ok", frr=True).model_dump(exclude_none=True)  # the agent's response_model_exclude_none


def configured_neighbors(world: World, nva: Nva) -> list[NvaNeighbor]:
    """The NVA's neighbor config. By default: the ARS instances whose session with it is up.

    (So a world that drops an instance from `connected_instances` models the usual cause, a neighbor
    missing from the NVA's config, which an intent then adds back.)
    """
    if nva.neighbors is not None:
        return sorted(nva.neighbors, key=lambda n: ip_order(n.ip))
    out: list[NvaNeighbor] = []
    for rs, conn in world.connections_to(nva.ip):
        for i in conn.connected_instances:
            if 0 <= i < len(rs.ips) and all(n.ip != rs.ips[i] for n in out):
                out.append(NvaNeighbor(rs.ips[i], rs.asn))
    return sorted(out, key=lambda n: ip_order(n.ip))


def established(world: World, nva: Nva, neighbor_ip: str) -> bool:
    """A session is up iff ARS has a connection to this NVA and that instance is connected."""
    for rs, conn in world.connections_to(nva.ip):
        if neighbor_ip in rs.ips and rs.ips.index(neighbor_ip) in conn.connected_instances:
            return True
    return False


def state(world: World, nva: Nva, uptime_ms: int) -> dict[str, Any]:
    return _state(world, nva, uptime_ms).model_dump()


def _state(world: World, nva: Nva, uptime_ms: int) -> AgentState:
    sends = [
        AdvertisedRoute(prefix=p, next_hop=nh, as_path=path)
        for p, nh, path in sorted(nva_sends(nva), key=lambda r: prefix_order(r[0]))
    ]
    neighbors = []
    for n in configured_neighbors(world, nva):
        up = established(world, nva, n.ip)
        neighbors.append(
            NeighborState(
                ip=n.ip,
                remote_asn=n.asn,
                # "Active" is FRR's word for "configured, trying to connect".
                state="Established" if up else "Active",
                uptime_ms=uptime_ms if up else 0,
                advertised=list(sends) if up else [],
            )
        )
    return AgentState(local_asn=nva.asn, router_id=nva.ip, config_hash=config_hash(world, nva), neighbors=neighbors)


def config_hash(world: World, nva: Nva) -> str:
    return "sha256:" + hashlib.sha256("\n".join(_config_lines(world, nva)).encode()).hexdigest()


def parse_intent(body: Any) -> BgpIntent:
    """Validate with the real agent's own model (nva_agent.models.BgpIntent): one contract."""
    try:
        return BgpIntent.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise IntentError(tuple(first["loc"]), first["msg"]) from exc


def _policy(p: AgentPolicy | None) -> policy.Policy | None:
    if p is None:
        return None
    return policy.Policy.model_validate(dataclasses.asdict(p))


def check_policy(nva: Nva, intent: BgpIntent) -> None:
    """The real agent's policy check, on the policy the world gives this NVA; PolicyRefused if outside."""
    try:
        policy.check(_policy(nva.agent_policy), intent)
    except policy.PolicyViolation as exc:
        raise PolicyRefused(exc) from exc


def apply_intent(world: World, nva: Nva, intent: BgpIntent, uptime_ms: int) -> dict[str, Any]:
    """Apply like the real agent: diff the config, apply unless dry-run, read back, roll back on mismatch.

    Raises PolicyRefused outside the NVA's policy (403) and IntentConflict when the NVA runs
    another local AS (409), before anything changes.
    """
    check_policy(nva, intent)
    if intent.local_asn != nva.asn:
        raise IntentConflict(str(render.AsnMismatch(nva.asn, intent.local_asn)), [f"router bgp {nva.asn}"])
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
    return IntentResult(
        changed=bool(changes),
        applied=applied,
        rolled_back=rolled_back,
        dry_run=intent.dry_run,
        changes=changes,
        state=_state(world, nva, uptime_ms),
        message=message,
    ).model_dump()


# ---- the emulated NVA's "config" -----------------------------------------------------------------


def _config_lines(world: World, nva: Nva) -> list[str]:
    """FRR-like config statements, so changes read like the real agent's `+ `/`- ` lines."""
    lines = [f"router bgp {nva.asn}"]
    lines += [f"neighbor {n.ip} remote-as {n.asn}" for n in configured_neighbors(world, nva)]
    rmap = f"route-map {render.ROUTE_MAP} permit 10"
    for a in sorted(nva.announcements, key=lambda a: prefix_order(a.prefix)):
        lines.append(f"network {a.prefix} route-map {render.ORIGINATE_MAP}")
        if a.next_hop != nva.ip:
            lines.append(f"{rmap} | match {a.prefix} | set ip next-hop {a.next_hop}")
        if a.as_path != str(nva.asn):
            lines.append(f"{rmap} | match {a.prefix} | as-path {a.as_path!r}")
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


def _write(world: World, nva: Nva, intent: BgpIntent) -> None:
    next_hop = intent.next_hop or nva.ip  # no next-hop rule: FRR sends its own address
    nva.neighbors = [NvaNeighbor(n.ip, n.asn) for n in intent.neighbors]
    nva.announcements = [Announcement(p, next_hop, str(intent.local_asn)) for p in intent.prefixes]
    nva.out_filter = True
    for rs, conn in world.connections_to(nva.ip):
        # Instance index = position of the neighbor IP among the route server's IPs.
        conn.connected_instances = sorted(
            i for i, ip in enumerate(rs.ips) if any(n.ip == ip and n.asn == rs.asn for n in intent.neighbors)
        )


def _problems(world: World, nva: Nva, intent: BgpIntent) -> list[str]:
    """Why the NVA does not (yet) carry the intent: the real agent's own read-back check
    (nva_agent.state.problems) on the state the emulated NVA would answer with."""
    return problems(_state(world, nva, 0), intent)
