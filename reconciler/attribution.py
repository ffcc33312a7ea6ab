"""Who or what made a change: the one value the ledger, the cards and `status` show as "changed by".

Owns `Attribution` (who, what operation, when, where it was learnt from) and its one-line text.
Pure: must not know Event Grid payloads, the Activity Log or the agent; their adapters build it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

_MAX = 200  # per field: a claim or an operation name is short; anything longer is clipped


class ChangeSource(StrEnum):
    """Where the attribution came from (the closed set of sources)."""

    EVENT_GRID = "event-grid"  # the ARM event's claims, delivered within seconds
    ACTIVITY_LOG = "activity-log"  # the timer's fallback when no event arrived
    AGENT = "agent"  # the NVA agent saw FRR's config change outside the agent


@dataclass(frozen=True)
class Attribution:
    """A change to a resource the design depends on, and who made it (when it can be known)."""

    who: str  # UPN, else display name, else app id; "" when unknown
    operation: str  # e.g. Microsoft.Network/virtualHubs/bgpConnections/delete
    at: datetime | None
    source: ChangeSource
    resource: str = ""  # the ARM resource ID (or "frr" for the NVA's running config)
    correlation_id: str = ""
    app_id: str = ""

    def describe(self) -> str:
        """One line for a card or a terminal: `alice@contoso.com: bgpConnections/delete at 12:03:04Z`."""
        who = self.who or (f"app {self.app_id}" if self.app_id else "unknown caller")
        op = "/".join(self.operation.split("/")[-2:]) if self.operation else "change"
        when = f" at {self.at:%Y-%m-%d %H:%M:%SZ}" if self.at is not None else ""
        corr = f", correlation {self.correlation_id}" if self.correlation_id else ""
        # "(agent)" after "outside the agent" reads as a contradiction at 3 a.m.: say who reported it.
        source = "reported by the NVA agent" if self.source is ChangeSource.AGENT else self.source.value
        return f"{who}: {op}{when} ({source}{corr})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "who": self.who,
            "operation": self.operation,
            "at": self.at.isoformat() if self.at is not None else None,
            "source": self.source.value,
            "resource": self.resource,
            "correlation_id": self.correlation_id,
            "app_id": self.app_id,
            "text": self.describe(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Attribution | None:
        """The stored form back; None for anything that is not one (old rows, hand edits)."""
        if not isinstance(data, dict):
            return None
        try:
            at = data.get("at")
            return cls(
                who=_clip(data.get("who")),
                operation=_clip(data.get("operation")),
                at=datetime.fromisoformat(at) if isinstance(at, str) else None,
                source=ChangeSource(str(data.get("source"))),
                resource=_clip(data.get("resource"), 400),
                correlation_id=_clip(data.get("correlation_id")),
                app_id=_clip(data.get("app_id")),
            )
        except ValueError:
            return None

    @classmethod
    def from_json(cls, text: Any) -> Attribution | None:
        if not isinstance(text, str) or not text:
            return None
        try:
            return cls.from_dict(json.loads(text))
        except ValueError:
            return None


def _clip(value: Any, limit: int = _MAX) -> str:
    return value[:limit] if isinstance(value, str) else ""


def latest(items: list[Attribution]) -> Attribution | None:
    """The most recent change (undated ones count as oldest)."""
    dated = sorted(items, key=lambda a: a.at.timestamp() if a.at is not None else float("-inf"))
    return dated[-1] if dated else None
