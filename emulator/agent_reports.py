"""The emulated agent's change reports: it notices when an emulated NVA's BGP config changes
(neighbours, announcements, the outbound filter) and tells the reconciler, signed, like the real
agent does (`POST <endpoint>` with x-ars-timestamp / x-ars-nonce / x-ars-signature; the format is
the reconciler's `change_report` module, restated here because the emulator must not import it).

Owns polling the world (every `period_s`), telling changes the emulated agent made itself (an
applied intent: the emulator's request log shows it) from changes made around it (a test's world
edit: "outside-agent"), and delivery after `delay_s`, retried with back-off, in its own thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)
_LABEL = b"ars-change-report-v1"


def _fingerprint(nva: Any) -> str:
    text = repr((nva.neighbors, nva.announcements, nva.out_filter))
    return hashlib.sha256(text.encode()).hexdigest()


class AgentReporter:
    """Watch every NVA of `emu.world` and report its changes to `endpoint` (None = do not send)."""

    def __init__(self, emu: Any, endpoint: str | None, *, period_s: float = 0.2, delay_s: float = 0.0) -> None:
        self.emu = emu
        self.endpoint = endpoint
        self.period_s = period_s
        self.delay_s = delay_s
        self.sent: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self._stop = threading.Event()
        with emu.world.lock:
            self._seen = {n.ip: _fingerprint(n) for n in emu.world.nvas}
        self._since = time.time()
        self._thread = threading.Thread(target=self._run, name="agent-reports", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            polled_at = time.time()
            with self.emu.world.lock:
                now = {n.ip: (_fingerprint(n), n.agent_token) for n in self.emu.world.nvas}
            for ip, (fp, token) in now.items():
                old = self._seen.get(ip)
                if old == fp:
                    continue
                self._seen[ip] = fp
                by = "agent" if self._intent_since(ip, self._since) else "outside-agent"
                report = {
                    "v": 1, "nva_ip": ip, "kind": "config", "at": datetime.now(UTC).isoformat(), "by": by,
                    "summary": "BGP neighbours, announcements or route-map changed", "old_hash": old or "",
                    "new_hash": fp,
                }  # fmt: skip
                threading.Thread(target=self._deliver, args=(report, token), daemon=True).start()
            self._since = polled_at

    def _intent_since(self, ip: str, since: float) -> bool:
        # The request log gets an intent's entry right after it is applied; allow that instant.
        time.sleep(0.02)
        return any(
            r.op == "agent.intent" and r.status == 200 and f"/agents/{ip}/" in r.path and r.at >= since - 0.05
            for r in self.emu.requests
        )

    def _deliver(self, report: dict[str, Any], token: str) -> None:
        if self._stop.wait(self.delay_s) or not self.endpoint:
            return
        key = hmac.new(token.encode(), _LABEL, hashlib.sha256).digest()
        for attempt in range(5):
            body = json.dumps(report).encode()
            ts, nonce = int(time.time()), secrets.token_hex(16)
            text = f"{ts}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()
            sig = "v1=" + hmac.new(key, text, hashlib.sha256).hexdigest()
            req = urllib.request.Request(
                self.endpoint, data=body, method="POST",
                headers={"Content-Type": "application/json", "x-ars-timestamp": str(ts), "x-ars-nonce": nonce,
                         "x-ars-signature": sig},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:  # a loopback URL the test gave
                    if int(resp.status) < 300:
                        self.sent.append(report)
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    self.failed.append(report)  # a 4xx never improves: do not retry
                    return
            except (urllib.error.URLError, OSError) as exc:
                log.warning("change report to %s failed: %s", self.endpoint, exc)
            if self._stop.wait(0.2 * 2**attempt):
                return
        self.failed.append(report)
