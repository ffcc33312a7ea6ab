"""NVA change reports: the agent tells the reconciler, within about a second, that FRR changed. Pure.

Owns the report's wire format and its verification: the signature (an HMAC over timestamp, nonce
and body digest, keyed per peer from the agent's token: `report_signature`, the one rule the agent
and the emulator sign with), a ±60 s timestamp window and a nonce the intake remembers (replay).
Must not know storage, HTTP frameworks or the clock.

    POST /api/agent/changes
    x-ars-timestamp: 1764676800            (Unix seconds)
    x-ars-nonce:     16-64 hex characters, new per report
    x-ars-signature: v1=<hex HMAC-SHA256(report_key(token), f"{ts}\\n{nonce}\\n{sha256(body).hex()}")>
    {"v": 1, "nva_ip": "10.0.1.6", "kind": "config", "at": "...Z", "by": "outside-agent",
     "summary": "...", "old_hash": "...", "new_hash": "..."}

`by` is "outside-agent" for a change the agent did not make (a vtysh edit, a restart, a session
lost) and "agent" for its own applied intents (the reconciler's fixes): those never start a pass.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from reconciler.attribution import Attribution, ChangeSource
from reconciler.events import Rejected, Verdict
from reconciler.report_signature import NONCE, SIGNATURE, TIMESTAMP, report_key, sign

__all__ = ["ChangeKind", "ChangeReport", "ChangedBy", "peek_ip", "report_key", "sign", "verify"]

MAX_BODY = 8192
WINDOW = timedelta(seconds=60)
_NONCE = re.compile(r"^[0-9a-f]{16,64}$")
# ASCII seconds only: `str.isdigit` also takes "²" and unbounded lengths, on which int() raises.
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIG = re.compile(r"^v1=([0-9a-f]{64})$")


class ChangeKind(StrEnum):
    CONFIG = "config"  # FRR's running config changed
    SESSIONS = "sessions"  # a BGP session went up or down
    ADVERTISED = "advertised"  # what FRR advertises changed


class ChangedBy(StrEnum):
    OUTSIDE = "outside-agent"
    AGENT = "agent"


@dataclass(frozen=True)
class ChangeReport:
    nva_ip: str
    kind: ChangeKind
    at: datetime
    by: ChangedBy
    summary: str
    old_hash: str
    new_hash: str
    nonce: str

    def attribution(self) -> Attribution:
        # The agent's hashes read "sha256:<hex>" (its state's config_hash): 12 hex digits tell them apart.
        old, new = (h.removeprefix("sha256:")[:12] for h in (self.old_hash, self.new_hash))
        hashes = f" ({old} -> {new})" if old or new else ""
        return Attribution(
            who="outside the agent (vtysh, a restart or the network)",
            operation=f"frr {self.kind.value} changed: {self.summary}{hashes}"[:200],
            at=self.at,
            source=ChangeSource.AGENT,
            resource=f"nva {self.nva_ip}",
        )


def peek_ip(body: bytes) -> str:
    """The NVA the report claims to come from (to pick its key). Rejected(MALFORMED) if unreadable."""
    data = _json(body)
    ip = data.get("nva_ip")
    try:
        return str(ipaddress.IPv4Address(ip if isinstance(ip, str) else ""))
    except ValueError as exc:
        raise Rejected(Verdict.MALFORMED, "nva_ip must be an IPv4 address") from exc


def verify(headers: dict[str, str], body: bytes, key: bytes, now: datetime) -> ChangeReport:
    """The authenticated report, or Rejected (MALFORMED, FORGED, STALE). Replay is the caller's
    check (the nonce must be new), and so is `by == agent` (SELF)."""
    head = {k.lower(): v for k, v in headers.items()}
    if len(body) > MAX_BODY:
        raise Rejected(Verdict.MALFORMED, f"report of {len(body)} bytes is too large")
    ts_text, nonce, sig = head.get(TIMESTAMP, ""), head.get(NONCE, ""), head.get(SIGNATURE, "")
    if not _TIMESTAMP.fullmatch(ts_text) or not _NONCE.fullmatch(nonce) or not _SIG.fullmatch(sig):
        raise Rejected(Verdict.FORGED, "missing or malformed x-ars-timestamp / x-ars-nonce / x-ars-signature")
    # Signature before anything else is believed: an unsigned body is not parsed further.
    if not hmac.compare_digest(sign(key, int(ts_text), nonce, body), sig):
        raise Rejected(Verdict.FORGED, "signature does not match")
    sent = datetime.fromtimestamp(int(ts_text), UTC)
    if abs(now - sent) > WINDOW:
        raise Rejected(Verdict.STALE, f"timestamp {sent.isoformat()} is outside ±{WINDOW.seconds} s")
    data = _json(body)
    if data.get("v") != 1:
        raise Rejected(Verdict.MALFORMED, "report version must be 1")
    try:
        at = datetime.fromisoformat(str(data.get("at", "")).replace("Z", "+00:00"))
        kind, by = ChangeKind(str(data.get("kind"))), ChangedBy(str(data.get("by")))
    except ValueError as exc:
        raise Rejected(Verdict.MALFORMED, f"report field: {exc}") from exc
    if at.tzinfo is None:
        raise Rejected(Verdict.MALFORMED, "at has no timezone")
    return ChangeReport(
        nva_ip=peek_ip(body),
        kind=kind,
        at=at,
        by=by,
        summary=_text(data.get("summary"), 300),
        old_hash=_text(data.get("old_hash"), 80),
        new_hash=_text(data.get("new_hash"), 80),
        nonce=nonce,
    )


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(Verdict.MALFORMED, "report is not JSON") from exc
    if not isinstance(data, dict):
        raise Rejected(Verdict.MALFORMED, "report must be a JSON object")
    return data


def _text(value: Any, limit: int) -> str:
    return "".join(c for c in value if c.isprintable())[:limit] if isinstance(value, str) else ""
