"""Azure Resource Manager events (Event Grid) -> the targets whose pass they should start. Pure.

Owns: parsing an ARM event in either delivery schema (Event Grid schema, CloudEvents 1.0), the
screening rules (forged, stale, self-caused), the map from a resource ID to the targets of the
desired state it can affect, and the coalescing decision (one pending pass per target, a settle
delay, a minimum interval). Must not know storage, queues, the Functions SDK or the clock: the
adapter (`reconciler.event_intake`) brings the marker state and `now`.

Sources (the sample payloads are kept as test fixtures in tests/fixtures/eventgrid/):
- Event shape, event types, `data.*` fields: Microsoft Learn, "Azure subscription as an Event
  Grid source" (articles/event-grid/event-schema-subscriptions.md). `subject` and
  `data.resourceUri` are the resource ID; `topic` (CloudEvents: `source`) is `/subscriptions/{id}`;
  GET requests raise no event; POST actions (our own route queries) raise ResourceActionSuccess.
- Claims: the caller's token claims, JWT names as ARM forwards them (`appid`, the
  `.../claims/upn` and `.../claims/objectidentifier` URIs, `name`); v2 tokens use `azp`/`oid`.
- The validation handshake: articles/event-grid/webhook-event-delivery.md (eventType
  `Microsoft.EventGrid.SubscriptionValidationEvent`, `data.validationCode`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from reconciler.arm_ids import network_id
from reconciler.attribution import Attribution, ChangeSource
from reconciler.desired import DesiredState, Target

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
_MAX_TEXT = 2048  # a resource ID is at most a few hundred characters; longer is not ARM's
_MAX_CLAIMS = 200


class EventKind(StrEnum):
    WRITE = "write"
    DELETE = "delete"
    ACTION = "action"


# Only successes change anything; Failure/Cancel events are not subscribed to (infra/events.bicep).
EVENT_TYPES: dict[str, EventKind] = {
    "Microsoft.Resources.ResourceWriteSuccess": EventKind.WRITE,
    "Microsoft.Resources.ResourceDeleteSuccess": EventKind.DELETE,
    "Microsoft.Resources.ResourceActionSuccess": EventKind.ACTION,
}


class Verdict(StrEnum):
    """What became of one delivered event (the closed set the intake counts)."""

    ACCEPTED = "accepted"  # starts (or joins) a targeted pass
    UNRELATED = "unrelated"  # a resource no target depends on, or an event type we do not act on
    MALFORMED = "malformed"
    FORGED = "forged"  # wrong topic/subscription, or subject and resource disagree
    STALE = "stale"  # older than the allowed age (or from the future)
    REPLAYED = "replayed"  # an event id already handled
    SELF = "self"  # caused by the reconciler's own identity: never starts a pass


class Rejected(Exception):
    """An event that must not start a pass; `verdict` says which rule stopped it."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(f"{verdict.value}: {reason}")
        self.verdict = verdict
        self.reason = reason


class WatchedKind(StrEnum):
    HUB = "hub"
    BGP_CONNECTION = "bgpConnection"
    FIREWALL = "firewall"
    GATEWAY = "gateway"
    VNET = "vnet"
    SUBNET = "subnet"
    ROUTE_TABLE = "routeTable"


# Claim names as ARM forwards them (see the module docstring for the source).
CLAIM_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
CLAIM_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_WHO_CLAIMS = (CLAIM_UPN, "upn", "unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "name")


@dataclass(frozen=True)
class ArmEvent:
    """One ARM resource event, whichever schema delivered it."""

    id: str
    topic: str
    subject: str
    event_type: str
    event_time: datetime
    resource_uri: str
    operation: str
    subscription_id: str
    correlation_id: str
    claims: Mapping[str, str]
    principal_id: str  # data.authorization.evidence.principalId, when ARM sent it

    @property
    def kind(self) -> EventKind | None:
        return EVENT_TYPES.get(self.event_type)

    def caller_ids(self) -> frozenset[str]:
        """Every identifier of the caller (app id, object id, principal id), normalised."""
        raw = (self.claims.get("appid"), self.claims.get("azp"), self.claims.get(CLAIM_OID),
               self.claims.get("oid"), self.principal_id)  # fmt: skip
        return frozenset(normalise_id(v) for v in raw if v)

    def attribution(self) -> Attribution:
        who = next((self.claims[k] for k in _WHO_CLAIMS if self.claims.get(k)), "")
        return Attribution(
            who=who[:200],
            operation=self.operation[:200],
            at=self.event_time,
            source=ChangeSource.EVENT_GRID,
            resource=self.resource_uri[:400],
            correlation_id=self.correlation_id[:100],
            app_id=(self.claims.get("appid") or self.claims.get("azp") or "")[:100],
        )


def normalise_id(value: str) -> str:
    """GUIDs arrive with dashes in claims and without them in role-assignment evidence."""
    return value.strip().lower().replace("-", "").replace("{", "").replace("}", "")


def is_validation(envelope: Mapping[str, Any]) -> bool:
    return envelope.get("eventType") == VALIDATION_EVENT or envelope.get("type") == VALIDATION_EVENT


def _text(envelope: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = envelope.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > _MAX_TEXT:
        raise Rejected(Verdict.MALFORMED, f"{key} must be a non-empty string of at most {_MAX_TEXT} characters")
    return value


def _time(value: Any, key: str) -> datetime:
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, str):
        try:
            # Event Grid sends 7 fractional digits ("2018-07-19T18:38:04.6117357Z"); Python takes 6.
            head, dot, frac = value.rstrip("Z").partition(".")
            if value.endswith("Z"):
                at = datetime.fromisoformat(head + (dot + frac[:6] if dot else "") + "+00:00")
            else:
                at = datetime.fromisoformat(value)
        except ValueError as exc:
            raise Rejected(Verdict.MALFORMED, f"{key} {value[:40]!r} is not an ISO 8601 time") from exc
    else:
        raise Rejected(Verdict.MALFORMED, f"{key} is missing")
    if at.tzinfo is None:
        raise Rejected(Verdict.MALFORMED, f"{key} has no timezone")
    return at


def parse(envelope: Mapping[str, Any]) -> ArmEvent:
    """One event (Event Grid schema or CloudEvents 1.0) as an ArmEvent. Rejected(MALFORMED) if not one."""
    if not isinstance(envelope, Mapping):
        raise Rejected(Verdict.MALFORMED, "an event must be a JSON object")
    cloud = "specversion" in envelope
    if cloud and envelope.get("specversion") != "1.0":
        raise Rejected(Verdict.MALFORMED, f"CloudEvents specversion {envelope.get('specversion')!r} is not 1.0")
    event_id = _text(envelope, "id")
    topic = _text(envelope, "source" if cloud else "topic")
    event_type = _text(envelope, "type" if cloud else "eventType")
    subject = _text(envelope, "subject")
    event_time = _time(envelope.get("time" if cloud else "eventTime"), "time" if cloud else "eventTime")
    data = envelope.get("data")
    if not isinstance(data, Mapping):
        raise Rejected(Verdict.MALFORMED, "data must be an object")
    claims_raw = data.get("claims") or {}
    if not isinstance(claims_raw, Mapping) or len(claims_raw) > _MAX_CLAIMS:
        raise Rejected(Verdict.MALFORMED, "data.claims must be an object of strings")
    claims = {str(k): v[:_MAX_TEXT] for k, v in claims_raw.items() if isinstance(v, str)}
    auth = data.get("authorization")
    evidence = auth.get("evidence") if isinstance(auth, Mapping) else None
    principal = evidence.get("principalId") if isinstance(evidence, Mapping) else None
    return ArmEvent(
        id=event_id,
        topic=topic,
        subject=subject,
        event_type=event_type,
        event_time=event_time,
        resource_uri=_text(data, "resourceUri"),
        operation=_text(data, "operationName", required=False),
        subscription_id=_text(data, "subscriptionId"),
        correlation_id=_text(data, "correlationId", required=False),
        claims=claims,
        principal_id=principal if isinstance(principal, str) else "",
    )


@dataclass(frozen=True)
class Screen:
    """The rules an event must pass before it may start anything."""

    subscriptions: frozenset[str]  # watched subscription IDs, lower case
    own_ids: frozenset[str]  # the reconciler's identities (normalise_id)
    max_age: timedelta = timedelta(minutes=15)
    max_skew: timedelta = timedelta(minutes=5)  # an eventTime this far in the future is not believed

    @classmethod
    def for_state(cls, state: DesiredState, own_ids: list[str], max_age_s: float) -> Screen:
        return cls(
            subscriptions=frozenset(t.subscription_id.lower() for t in state.targets),
            own_ids=frozenset(normalise_id(i) for i in own_ids if i.strip()),
            max_age=timedelta(seconds=max_age_s),
        )


def screen(ev: ArmEvent, rules: Screen, now: datetime) -> None:
    """Raise Rejected when `ev` is forged, stale or self-caused; return when it may go on."""
    sub = ev.subscription_id.lower()
    if ev.topic.lower() != f"/subscriptions/{sub}" or sub not in rules.subscriptions:
        raise Rejected(Verdict.FORGED, f"topic {ev.topic[:80]!r} is not a watched subscription")
    uri = ev.resource_uri.lower()
    if not uri.startswith(f"/subscriptions/{sub}/") or ev.subject.lower() != uri:
        raise Rejected(Verdict.FORGED, "subject and data.resourceUri disagree with the topic")
    if ev.event_time < now - rules.max_age:
        raise Rejected(Verdict.STALE, f"eventTime {ev.event_time.isoformat()} is older than {rules.max_age}")
    if ev.event_time > now + rules.max_skew:
        raise Rejected(Verdict.STALE, f"eventTime {ev.event_time.isoformat()} is in the future")
    if ev.caller_ids() & rules.own_ids:
        raise Rejected(Verdict.SELF, "caused by the reconciler's own identity")


# ---- resource -> targets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    target: str
    kind: WatchedKind


def _rid(sub: str, rg: str, *path: str) -> str:
    return network_id(sub, rg, *path).lower()  # ARM IDs compare case-insensitively


class ResourceIndex:
    """Resource-ID prefixes of the design, per (subscription, resource group), for cheap lookups.

    A prefix matches the resource itself and its children (a hub's bgpConnections, a route
    table's routes); a VNet matches only itself (a PUT of the whole VNet rewrites its subnets).
    Route tables: the desired state names subnets, not their tables, so any route table in a
    resource group holding a watched subnet (or the target's own group) counts; a table in
    another group is caught by the timer, or by the subnet write that attaches it.
    """

    def __init__(self, state: DesiredState) -> None:
        self._by_group: dict[tuple[str, str], list[tuple[str, str, WatchedKind]]] = defaultdict(list)
        for t in state.targets:
            for prefix, kind in _prefixes(t):
                parts = prefix.split("/")
                self._by_group[(parts[2], parts[4])].append((prefix, t.name, kind))

    def affected(self, resource_uri: str) -> tuple[Hit, ...]:
        uri = resource_uri.lower().rstrip("/")
        parts = uri.split("/")
        if len(parts) < 5 or parts[1] != "subscriptions" or parts[3] != "resourcegroups":
            return ()
        hits: dict[str, WatchedKind] = {}
        for prefix, target, kind in self._by_group.get((parts[2], parts[4]), ()):
            if kind is WatchedKind.ROUTE_TABLE:
                ok = uri.startswith(prefix)  # prefix ends with "/routetables/"
            elif kind is WatchedKind.VNET:
                ok = uri == prefix  # a PUT of the whole VNet; its other subnets are not ours
            else:
                ok = uri == prefix or uri.startswith(prefix + "/")
            if ok:
                if kind is WatchedKind.HUB and "/bgpconnections/" in uri[len(prefix) :] + "/":
                    kind = WatchedKind.BGP_CONNECTION
                hits.setdefault(target, kind)
        return tuple(Hit(t, k) for t, k in sorted(hits.items()))


def _prefixes(t: Target) -> list[tuple[str, WatchedKind]]:
    sub, rg = t.subscription_id, t.resource_group
    out = [(_rid(sub, rg, "virtualhubs", t.route_server), WatchedKind.HUB)]
    if t.firewall.name is not None:
        fw_rg = t.firewall.resource_group or rg
        out.append((_rid(sub, fw_rg, "azurefirewalls", t.firewall.name), WatchedKind.FIREWALL))
    for g in t.gateways:
        out.append((_rid(sub, g.resource_group or rg, "virtualnetworkgateways", g.name), WatchedKind.GATEWAY))
    groups = {rg}
    for s in t.subnets:
        srg = s.resource_group or rg
        groups.add(srg)
        # The VNet itself (a PUT of the whole VNet rewrites its subnets) and the subnet.
        out.append((_rid(sub, srg, "virtualnetworks", s.vnet, "subnets", s.subnet), WatchedKind.SUBNET))
        vnet = (_rid(sub, srg, "virtualnetworks", s.vnet), WatchedKind.VNET)
        if vnet not in out:
            out.append(vnet)
    if t.subnets:
        out.extend((_rid(sub, g, "routetables") + "/", WatchedKind.ROUTE_TABLE) for g in sorted(groups))
    return out


def subject_prefixes(state: DesiredState) -> dict[str, list[str]]:
    """Per subscription, the `subject` prefixes an event subscription should filter on (infra)."""
    out: dict[str, set[str]] = defaultdict(set)
    for t in state.targets:
        out[t.subscription_id].update(prefix for prefix, _kind in _prefixes(t))
    # Event Grid's StringBeginsWith is case-insensitive; a prefix covered by a shorter one (a subnet
    # under its VNet) would only spend one of the 25 filter values an event subscription has.
    return {
        sub: sorted(p for p in ps if not any(p != q and p.startswith(q) for q in ps)) for sub, ps in sorted(out.items())
    }


# ---- coalescing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """The per-target pending marker as stored (None fields when never set)."""

    pending: bool
    enqueued_at: datetime | None = None
    last_run_at: datetime | None = None


@dataclass(frozen=True)
class Enqueue:
    delay_s: float  # queue visibility delay: the settle time, stretched to keep the minimum interval


@dataclass(frozen=True)
class Coalesce:
    reason: str


@dataclass(frozen=True)
class Pacing:
    settle_s: float = 1.0  # let a burst of writes land before the pass looks (settings.event_settle)
    min_interval_s: float = 5.0  # at most one event pass per target per interval
    lost_after_s: float = 300.0  # a pending marker this old lost its message (expired, deleted)


def decide(marker: Marker | None, now: datetime, pacing: Pacing) -> Enqueue | Coalesce:
    """Enqueue a targeted pass, or join the one already pending for the target."""
    if marker is not None and marker.pending and marker.enqueued_at is not None:
        age = (now - marker.enqueued_at).total_seconds()
        if age < pacing.lost_after_s:
            return Coalesce(f"a pass was queued {age:.1f} s ago")
    delay = pacing.settle_s
    if marker is not None and marker.last_run_at is not None:
        since = (now - marker.last_run_at).total_seconds()
        delay = max(delay, pacing.min_interval_s - since)
    return Enqueue(round(max(0.0, delay), 3))
