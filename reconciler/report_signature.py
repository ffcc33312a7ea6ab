"""How an NVA agent's change report is signed: the key derived from the agent's token, the signed
text and the three headers. Written once for the three that sign or verify: the agent
(`nva_agent/change_reports.py`), the emulated agent (`emulator/agent_reports.py`) and the
reconciler's intake (`change_report.verify`).

Owns that rule. Stdlib only and imports nothing of ours (like `asn`), because the agent ships to the NVA alone with
only this file and `asn.py` of the reconciler. Must not know the report's fields, HTTP or clocks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# A fixed label, so the HMAC key differs from the bearer token and the token itself never travels.
LABEL = b"ars-change-report-v1"
TIMESTAMP = "x-ars-timestamp"  # Unix seconds
NONCE = "x-ars-nonce"  # 16-64 hex characters, new per report
SIGNATURE = "x-ars-signature"  # v1=<hex HMAC-SHA256(report_key(token), f"{ts}\n{nonce}\n{sha256(body).hex()}")>


def report_key(agent_token: str) -> bytes:
    """The per-peer HMAC key: derived from the agent's token, never the token itself."""
    return hmac.new(agent_token.encode("utf-8"), LABEL, hashlib.sha256).digest()


def sign(key: bytes, timestamp: int, nonce: str, body: bytes) -> str:
    text = f"{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()
    return "v1=" + hmac.new(key, text, hashlib.sha256).hexdigest()


def signed_headers(agent_token: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers of one report sent at `timestamp` (a fresh nonce each call)."""
    nonce = secrets.token_hex(16)
    return {
        "Content-Type": "application/json",
        TIMESTAMP: str(timestamp),
        NONCE: nonce,
        SIGNATURE: sign(report_key(agent_token), timestamp, nonce, body),
    }
