"""The emulated agent's change reports: it notices when an emulated NVA's BGP config changes
(neighbours, announcements, the outbound filter) and tells the reconciler, signed, like the real
agent does (`POST <endpoint>`; the format is the reconciler's `change_report`, signed with
`reconciler.report_signature`, the one stdlib-only signing rule the agent uses too).

Owns polling the world (every `period_s`), telling changes the emulated agent made itself (an
applied intent: the emulator calls `on_intent` under the world lock) from changes made around it (a test's world
edit: "outside-agent"), and delivery after `delay_s`, retried with back-off, in its own thread.
It must not write the report's format or signature itself: both are the reconciler's own code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from reconciler.report_signature import signed_headers

log = logging.getLogger(__name__)


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
        emu.on_intent = self._agent_applied
        self._thread = threading.Thread(target=self._run, name="agent-reports", daemon=True)
        self._thread.start()

    def _agent_applied(self, ip: str) -> None:
        # Called by the emulator under the world lock right after an intent: the agent's own change.
        nva = self.emu.world.find_nva(ip)
        if nva is not None:
            old, self._seen[ip] = self._seen.get(ip), _fingerprint(nva)
            if old != self._seen[ip]:
                self._send(ip, nva.agent_token, "agent", old, self._seen[ip])

    def close(self) -> None:
        self.emu.on_intent = None
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            with self.emu.world.lock:  # the intent hook updates `_seen` under the same lock
                for n in self.emu.world.nvas:
                    fp, old = _fingerprint(n), self._seen.get(n.ip)
                    if old != fp:
                        self._seen[n.ip] = fp
                        self._send(n.ip, n.agent_token, "outside-agent", old, fp)

    def _send(self, ip: str, token: str, by: str, old: str | None, new: str) -> None:
        report = {
            "v": 1, "nva_ip": ip, "kind": "config", "at": datetime.now(UTC).isoformat(), "by": by,
            "summary": "BGP neighbours, announcements or route-map changed", "old_hash": old or "", "new_hash": new,
        }  # fmt: skip
        threading.Thread(target=self._deliver, args=(report, token), daemon=True).start()

    def _deliver(self, report: dict[str, Any], token: str) -> None:
        if self._stop.wait(self.delay_s) or not self.endpoint:
            return
        for attempt in range(5):
            body = json.dumps(report).encode()
            headers = signed_headers(token, body, int(time.time()))
            req = urllib.request.Request(self.endpoint, data=body, method="POST", headers=headers)
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
