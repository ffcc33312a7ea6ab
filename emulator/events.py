"""Emulated Event Grid: the ARM emulator's writes (and test-made world changes) as Azure
subscription events, pushed to a webhook endpoint after a configurable delivery delay.

Owns the event payload (the documented shape: Microsoft Learn, "Azure subscription as an Event
Grid source"; Event Grid schema by default, CloudEvents 1.0 on request), the caller identity in
`data.claims`, and delivery (POST, header `aeg-event-type: Notification`, retried with back-off
as Event Grid does). It must not know the reconciler: it emulates Azure, not its subscriber.

    pub = EventPublisher(endpoint, delay_s=1.0)
    emu.events = pub                                   # the emulator's ARM writes publish
    pub.publish(resource_id, "write", caller=ALICE)    # a change a test made to the world
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

EVENT_TYPES = {
    "write": "Microsoft.Resources.ResourceWriteSuccess",
    "delete": "Microsoft.Resources.ResourceDeleteSuccess",
    "action": "Microsoft.Resources.ResourceActionSuccess",
}
_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TENANT = "72f988bf-0000-4000-8000-000000000001"


@dataclass(frozen=True)
class Caller:
    """Who made the change, as the claims of their ARM token show it."""

    app_id: str
    object_id: str
    upn: str = ""
    name: str = ""

    def claims(self) -> dict[str, str]:
        # The claim set of the documentation's sample, reduced to what identifies the caller.
        c = {
            "aud": "https://management.core.windows.net/",
            "iss": f"https://sts.windows.net/{TENANT}/",
            "appid": self.app_id,
            "appidacr": "2",
            _OID: self.object_id,
            "http://schemas.microsoft.com/identity/claims/tenantid": TENANT,
            "ver": "1.0",
        }
        if self.upn:
            c[_UPN] = self.upn
        if self.name:
            c["name"] = self.name
        return c


# Who the emulator's callers are, by bearer token (the reconciler's tests use "emulator-token").
RECONCILER = Caller(app_id="a1b2c3d4-0000-4000-8000-00000000ec01", object_id="0b1e2c3d-0000-4000-8000-00000000ec01",
                    name="ars-reconciler (managed identity)")  # fmt: skip
ALICE = Caller(app_id="04b07795-8ddb-461a-bbee-02f9e1bf7b46", object_id="5f3c2a10-0000-4000-8000-0000000a11ce",
               upn="alice@contoso.example", name="Alice Admin")  # fmt: skip  # appid: Azure CLI
ANONYMOUS = Caller(app_id="00000000-0000-0000-0000-00000000dead", object_id="00000000-0000-0000-0000-00000000dead")


def operation_for(method: str, path: str) -> tuple[str, str, str] | None:
    """(kind, resource ID, operationName) for an ARM request that raises an event; None for GETs.

    `/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualHubs/h/bgpConnections/c`
    PUT -> write `Microsoft.Network/virtualHubs/bgpConnections/write`; a POST to a child action
    (`.../learnedRoutes`) -> action on the resource, `.../bgpConnections/learnedRoutes/action`
    (the documentation's listKeys sample has the same shape).
    """
    segs = [s for s in path.split("/") if s]
    low = [s.lower() for s in segs]
    if method not in ("PUT", "PATCH", "DELETE", "POST") or len(segs) < 8 or low[0] != "subscriptions":
        return None
    if low[2] != "resourcegroups" or low[4] != "providers":
        return None
    provider, rest = segs[5], segs[6:]
    action = None
    if len(rest) % 2 == 1:
        action, rest = rest[-1], rest[:-1]
    types = rest[0::2]
    resource = "/" + "/".join(segs[: 6 + len(rest)])
    if action is not None:
        return "action", resource, f"{provider}/{'/'.join(types)}/{action}/action"
    verb = "delete" if method == "DELETE" else "write"
    return verb, resource, f"{provider}/{'/'.join(types)}/{verb}"


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    event: dict[str, Any] = field(compare=False)
    tries: int = field(default=0, compare=False)


class EventPublisher:
    """Publish ARM events to `endpoint` (the webhook URL) `delay_s` after the change."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        delay_s: float = 0.0,
        schema: str = "eventgrid",
        callers: Mapping[str, Caller] | None = None,
        retries: int = 4,
    ) -> None:
        if schema not in ("eventgrid", "cloudevents"):
            raise ValueError("schema must be 'eventgrid' or 'cloudevents'")
        self.endpoint = endpoint
        self.delay_s = delay_s
        self.schema = schema
        self.callers = dict(callers or {"emulator-token": RECONCILER})
        self.retries = retries
        self.published: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self._drop = 0
        self._queue: list[_Due] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="eventgrid-delivery", daemon=True)
        self._thread.start()

    # ---- publishing -----------------------------------------------------------------------------

    def after_request(self, method: str, path: str, token: str | None) -> None:
        """The emulator's hook: a successful ARM request raises its event (GETs raise none)."""
        op = operation_for(method, path)
        if op is not None:
            kind, resource, operation = op
            self.publish(resource, kind, operation=operation, caller=self.callers.get(token or "", ANONYMOUS))

    def publish(self, resource_id: str, kind: str, *, operation: str = "", caller: Caller = ALICE) -> dict[str, Any]:
        """Publish one event about `resource_id` (kind: write | delete | action). Returns the event."""
        if kind not in EVENT_TYPES:
            raise ValueError(f"kind must be one of {sorted(EVENT_TYPES)}")
        segs = [s for s in resource_id.split("/") if s]
        sub = segs[1]
        if not operation:
            types = segs[6::2] if len(segs) > 6 else ["resource"]
            operation = f"{segs[5] if len(segs) > 5 else 'Microsoft.Resources'}/{'/'.join(types)}/{kind}"
        event = self.event(resource_id, sub, kind, operation, caller)
        with self._cv:
            self.published.append(event)
            if self._drop > 0:
                self._drop -= 1  # lost in transit: the timer has to catch this change
                return event
            heapq.heappush(self._queue, _Due(time.monotonic() + self.delay_s, next(self._seq), event))
            self._cv.notify()
        return event

    def drop_next(self, count: int = 1) -> None:
        """Lose the next `count` events (never delivered), as a lost or dead-lettered delivery would."""
        with self._cv:
            self._drop += count

    def event(self, resource_id: str, sub: str, kind: str, operation: str, caller: Caller) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        data = {
            "authorization": {
                "scope": resource_id,
                "action": operation,
                "evidence": {
                    "role": "Contributor",
                    "principalId": caller.object_id.replace("-", ""),
                    "principalType": "User" if caller.upn else "ServicePrincipal",
                },
            },
            "claims": caller.claims(),
            "correlationId": str(uuid.uuid4()),
            "resourceProvider": operation.split("/")[0],
            "resourceUri": resource_id,
            "operationName": operation,
            "status": "Succeeded",
            "subscriptionId": sub,
            "tenantId": TENANT,
        }
        if self.schema == "cloudevents":
            return {
                "subject": resource_id, "source": f"/subscriptions/{sub}", "type": EVENT_TYPES[kind],
                "time": now, "id": str(uuid.uuid4()), "data": data, "specversion": "1.0",
            }  # fmt: skip
        return {
            "subject": resource_id, "eventType": EVENT_TYPES[kind], "eventTime": now, "id": str(uuid.uuid4()),
            "data": data, "dataVersion": "2", "metadataVersion": "1", "topic": f"/subscriptions/{sub}",
        }  # fmt: skip

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued for delivery (True) or `timeout` passes (False)."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5)

    # ---- delivery -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._queue or self._queue[0].at > time.monotonic()):
                    self._cv.wait(None if not self._queue else max(0.0, self._queue[0].at - time.monotonic()))
                if self._stop:
                    return
                due = heapq.heappop(self._queue)
                self._busy = True
            ok = self._post(due.event)
            with self._cv:
                self._busy = False
                if ok:
                    self.delivered.append(due.event)
                elif due.tries + 1 < self.retries:
                    # Event Grid retries with exponential back-off; compressed here (0.2 s, 0.4 s, ...).
                    heapq.heappush(self._queue, _Due(time.monotonic() + 0.2 * 2**due.tries, next(self._seq),
                                                     due.event, due.tries + 1))  # fmt: skip
                else:
                    self.failed.append(due.event)
                self._cv.notify_all()

    def _post(self, event: dict[str, Any]) -> bool:
        if not self.endpoint:
            return False
        if self.schema == "cloudevents":
            body, ctype = json.dumps(event).encode(), "application/cloudevents+json; charset=utf-8"
        else:
            body, ctype = json.dumps([event]).encode(), "application/json"
        req = urllib.request.Request(
            self.endpoint, data=body, method="POST",
            headers={"Content-Type": ctype, "aeg-event-type": "Notification"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # a loopback URL the test gave
                return 200 <= int(resp.status) < 300
        except (urllib.error.URLError, OSError) as exc:
            log.warning("event delivery to %s failed: %s", self.endpoint, exc)
            return False
