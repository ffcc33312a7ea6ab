"""Who changed it, when the timer (not an event) found the drift: the Azure Activity Log.

Owns the query (Azure Monitor "Activity Logs - List", api-version 2015-04-01,
GET /subscriptions/{id}/providers/Microsoft.Insights/eventtypes/management/values with
`$filter=eventTimestamp ge '..' and eventTimestamp le '..' and resourceUri eq '..'`; source:
azure-rest-api-specs monitor/resource-manager/Microsoft.Insights/stable/2015-04-01, example
GetActivityLogsFiltered.json) and the pure choice of the change to show: the newest successful
write, delete or action on the drift's resource by someone other than the reconciler. The role
action it needs is `Microsoft.Insights/eventtypes/values/read` (infra/reconciler-role.json).

Must not decide drift; a failed query means "not known", never an error of the pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from reconciler.arm_ids import network_id
from reconciler.attribution import Attribution, ChangeSource
from reconciler.desired import Target
from reconciler.drift import Drift, DriftCode
from reconciler.events import CLAIM_OID, CLAIM_UPN, normalise_id

log = logging.getLogger(__name__)
API_VERSION = "2015-04-01"
# The RBAC action for reading it (Azure built-in "Monitoring Reader" holds it as */read; the
# resource provider operations list names it "Read management event types values").
READ_ACTION = "Microsoft.Insights/eventtypes/values/read"
WINDOW = timedelta(hours=2)  # how far back a change is looked for (the timer runs every few minutes)


def resources_for(target: Target, drifts: Sequence[Drift]) -> list[str]:
    """The ARM resources whose change may explain the Azure-side drift of this pass."""
    hub = network_id(target.subscription_id, target.resource_group, "virtualHubs", target.route_server)
    out: list[str] = []
    codes = {d.code for d in drifts}
    if codes & {DriftCode.BRANCH_TO_BRANCH_DISABLED, DriftCode.ROUTE_SERVER_UNHEALTHY}:
        out.append(hub)
    for d in drifts:
        if d.code in (DriftCode.PEER_MISSING, DriftCode.PEER_MISMATCH, DriftCode.PEER_FAILED):
            peer = next((p for p in target.peers if d.part("peer") == p.name), None)  # subject `peer=<name>`
            if peer is not None:
                out.append(f"{hub}/bgpConnections/{peer.name}")
    if DriftCode.FIREWALL_UNHEALTHY in codes and target.firewall.name:
        rg = target.firewall.resource_group or target.resource_group
        out.append(network_id(target.subscription_id, rg, "azureFirewalls", target.firewall.name))
    if DriftCode.UDR_INVARIANT_BROKEN in codes:
        for s in target.subnets:
            rg = s.resource_group or target.resource_group
            out.append(network_id(target.subscription_id, rg, "virtualNetworks", s.vnet, "subnets", s.subnet))
    return list(dict.fromkeys(out))


def query_path(subscription: str, resource: str, since: datetime, until: datetime) -> str:
    flt = (
        f"eventTimestamp ge '{since:%Y-%m-%dT%H:%M:%SZ}' and eventTimestamp le '{until:%Y-%m-%dT%H:%M:%SZ}' "
        f"and resourceUri eq '{resource}'"
    )
    return (
        f"/subscriptions/{subscription}/providers/Microsoft.Insights/eventtypes/management/values"
        f"?api-version={API_VERSION}&$filter={quote(flt)}"
    )


def latest_change(entries: Iterable[Mapping[str, Any]], own_ids: frozenset[str]) -> Attribution | None:
    """The newest succeeded change in `entries` (EventData values) not made by the reconciler."""
    best: tuple[datetime, Attribution] | None = None
    for e in entries:
        status = (e.get("status") or {}).get("value") if isinstance(e.get("status"), Mapping) else None
        op = (e.get("operationName") or {}).get("value") if isinstance(e.get("operationName"), Mapping) else None
        if status != "Succeeded" or not isinstance(op, str):
            continue
        if not op.lower().endswith(("/write", "/delete", "/action")):
            continue
        raw_claims = e.get("claims")
        claims: Mapping[str, Any] = raw_claims if isinstance(raw_claims, Mapping) else {}
        ids = {normalise_id(str(v)) for v in (claims.get("appid"), claims.get("azp"), claims.get(CLAIM_OID)) if v}
        if ids & own_ids:
            continue
        try:
            at = datetime.fromisoformat(str(e.get("eventTimestamp", "")).replace("Z", "+00:00")[:32])
        except ValueError:
            continue
        if at.tzinfo is None:
            continue
        who = str(claims.get(CLAIM_UPN) or e.get("caller") or claims.get("name") or "")
        change = Attribution(
            who=who[:200], operation=op[:200], at=at, source=ChangeSource.ACTIVITY_LOG,
            resource=str(e.get("resourceId") or "")[:400], correlation_id=str(e.get("correlationId") or "")[:100],
            app_id=str(claims.get("appid") or "")[:100],
        )  # fmt: skip
        if best is None or at > best[0]:
            best = (at, change)
    return best[1] if best else None


class ActivityLog:
    """The adapter: ask ARM's Activity Log about each resource of the drift; the newest change wins."""

    def __init__(self, arm: Any, own_ids: Iterable[str], window: timedelta = WINDOW) -> None:
        self._arm = arm
        self._own = frozenset(normalise_id(i) for i in own_ids if i.strip())
        self._window = window

    async def who_changed(self, target: Target, drifts: Sequence[Drift], now: datetime) -> Attribution | None:
        changes: list[Attribution] = []
        for resource in resources_for(target, drifts):
            # The filter takes whole seconds: round the end up, or a change in this second is missed.
            path = query_path(target.subscription_id, resource, now - self._window, now + timedelta(seconds=1))
            try:
                entries = await self._arm.get_json(target.subscription_id, path)
            except Exception as exc:  # not knowing who is never a failure of the pass
                log.info("activity log for %s: %s", resource, str(exc).splitlines()[0][:200] if str(exc) else exc)
                continue
            values = entries.get("value") if isinstance(entries, Mapping) else None
            found = latest_change(values if isinstance(values, list) else [], self._own)
            if found is not None:
                changes.append(found)
        return max(changes, key=lambda a: a.at or now - self._window, default=None)
