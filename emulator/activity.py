"""The emulated Activity Log ("Activity Logs - List", api-version 2015-04-01): the changes the
emulated Event Grid published (emulator.events), including those it lost in transit — the
Activity Log keeps them — as EventData values (shape: azure-rest-api-specs monitor
Microsoft.Insights/stable/2015-04-01/examples/GetActivityLogsFiltered.json). Only the filter the
reconciler uses is understood: eventTimestamp ge/le and resourceUri eq.

Owns that log and its filter; it must not know HTTP (emulator.server serves it) or who reads it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

_FILTER = re.compile(
    r"eventTimestamp ge '(?P<ge>[^']+)' and eventTimestamp le '(?P<le>[^']+)' and resourceUri eq '(?P<uri>[^']+)'"
)
_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def entries(publisher: Any, subscription: str, query: dict[str, str]) -> list[dict[str, Any]]:
    m = _FILTER.fullmatch(query.get("$filter", "").strip())
    if publisher is None or m is None:
        return []
    ge, le, uri = _at(m["ge"]), _at(m["le"]), m["uri"].lower()
    out = []
    for ev in list(publisher.published):
        data = ev["data"]
        when = _at(ev.get("eventTime") or ev["time"])
        if data["subscriptionId"] != subscription or data["resourceUri"].lower() != uri or not ge <= when <= le:
            continue
        op = data["operationName"]
        out.append({
            "authorization": {"action": op, "scope": data["resourceUri"]},
            "caller": data["claims"].get(_UPN) or data["claims"].get("appid", ""),
            "claims": data["claims"],
            "correlationId": data["correlationId"],
            "eventDataId": ev["id"],
            "eventName": {"value": "EndRequest", "localizedValue": "End request"},
            "level": "Informational",
            "operationName": {"value": op, "localizedValue": op},
            "resourceId": data["resourceUri"],
            "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
            "eventTimestamp": ev.get("eventTime") or ev["time"],
            "subscriptionId": subscription,
        })  # fmt: skip
    return out
