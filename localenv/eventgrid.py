"""The Functions host's Event Grid extension, locally: the webhook an event subscription pushes to.

Owns what the real host does at `/runtime/webhooks/eventgrid?functionName=<fn>&code=<system key>`
(Microsoft Learn, "Azure Event Grid trigger for Azure Functions" and "Webhook event delivery"):
- Event Grid schema: header `aeg-event-type: SubscriptionValidation` -> 200 with
  `{"validationResponse": <data.validationCode>}` (the function is not invoked);
  `aeg-event-type: Notification` -> the function once per event of the JSON array.
- CloudEvents 1.0: the abuse-protection OPTIONS request (`WebHook-Request-Origin`) -> 200 with
  `WebHook-Allowed-Origin`; a POST carries one event (or a batch array).
A function that raises answers 500, so the sender retries (Event Grid does, with back-off).
Events reach the function decoded by the SDK's own converter, as the Python worker does.
It must not know what the function does with an event, nor route anything else: the host
(`localenv.host`) serves this path and hands each request here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

if TYPE_CHECKING:
    from localenv.host import LocalHost

log = logging.getLogger(__name__)
PATH = "/runtime/webhooks/eventgrid"
_MAX_BODY = 1024 * 1024  # Event Grid's event size limit is 1 MB


async def deliver(
    host: LocalHost, params: Mapping[str, str], method: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, bytes, dict[str, str]]:
    """Answer one request to the Event Grid webhook of `host`, on its worker loop."""
    head = {k.lower(): v for k, v in headers.items()}
    if host.key is not None and params.get("code") != host.key:
        return _json(401, {"error": "the Event Grid webhook needs the system key (?code=)"})
    name = params.get("functionName", "")
    if host.kind(name) != "eventGridTrigger":
        return _json(404, {"error": f"no Event Grid function {name!r}"})
    if method == "OPTIONS":  # CloudEvents abuse protection
        origin = head.get("webhook-request-origin", "")
        return 200, b"", {"WebHook-Allowed-Origin": origin} if origin else {}
    if method != "POST":
        return _json(405, {"error": "POST events"})
    if len(body) > _MAX_BODY:
        return _json(413, {"error": "event batch too large"})
    try:
        payload = json.loads(body)
    except ValueError:
        return _json(400, {"error": "body is not JSON"})
    events = payload if isinstance(payload, list) else [payload]
    if head.get("aeg-event-type") == "SubscriptionValidation":
        first = events[0] if events and isinstance(events[0], dict) else {}
        code = (first.get("data") or {}).get("validationCode") if isinstance(first.get("data"), dict) else None
        if not isinstance(code, str):
            return _json(400, {"error": "validation event without data.validationCode"})
        return _json(200, {"validationResponse": code})
    for event in events:
        value = EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata={})
        try:
            await host.ainvoke(name, value)
        except Exception as exc:
            log.warning("Event Grid function %s failed: %s", name, exc)
            return _json(500, {"error": "function failed"})
    return 200, b"", {}


def _json(status: int, payload: object) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json"}
