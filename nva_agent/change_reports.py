"""Change reports: the agent tells the reconciler, within about a second, that FRR changed.

Owns watching FRR (its running config and its BGP sessions, read every `period_s` with the same
read-only vtysh commands the state endpoint uses), telling the agent's own applied intents from
changes made around it (a vtysh edit, a restart, a session lost), and delivering a signed report
(`POST <url>`; the format is the reconciler's `change_report`; it is signed with
`reconciler.report_signature`, the stdlib-only file the agent ships with, so both sides use one
rule). Delivery runs beside the watcher with a bounded queue and retries with back-off, so a
reconciler that cannot be reached never slows FRR or the agent's API down. It must not change
FRR: it only reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from nva_agent import render
from nva_agent.frr import FrrError, FrrPort
from nva_agent.intent import OwnConfig
from reconciler.report_signature import signed_headers

log = logging.getLogger(__name__)
QUEUE_MAX = 32  # reports waiting for delivery; the oldest go first when the reconciler is away


class ChangeReporter:
    """Watch FRR and report its changes. `token()` gives the tokens to sign with (the current one,
    then the next during a rotation; none: do not send); `own()` is what the agent itself last
    wrote to FRR (`intent.OwnConfig`, read under `apply_lock`, so a poll never sees half an apply)."""

    def __init__(
        self,
        frr: FrrPort,
        url: str,
        nva_ip: str,
        token: Callable[[], Sequence[str]],
        *,
        apply_lock: asyncio.Lock,
        own: Callable[[], OwnConfig],
        period_s: float = 1.0,
        retries: int = 6,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.frr, self.url, self.nva_ip, self.token = frr, url, nva_ip, token
        self.apply_lock, self.own, self.period_s, self.retries = apply_lock, own, period_s, retries
        self._transport, self._sleep = transport, sleep
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.sent = 0
        self.dropped = 0
        self._last: tuple[str, str, str] | None = None
        self._writes_seen = own().writes

    async def fingerprint(self) -> tuple[str, str, str]:
        """(running-config hash, session states, prefixes sent per neighbour): what a report compares.

        What FRR advertises can change with no config change (the route behind a `network`
        statement leaves the RIB: import-check withdraws it); the summary's `pfxSnt` counts show
        that at no extra vtysh call."""
        config = await self.frr.running_config()
        summary = await self.frr.show_json("show bgp summary json")
        peers = sorted(((summary.get("ipv4Unicast") or {}).get("peers") or {}).items())
        sessions = ",".join(f"{ip}={(p or {}).get('state', '?')}" for ip, p in peers)
        sent = ",".join(f"{ip}={(p or {}).get('pfxSnt', '?')}" for ip, p in peers)
        return render.config_hash(config), sessions, sent

    async def poll_once(self) -> dict[str, Any] | None:
        """Read FRR once; a report when it changed since the last read (None otherwise)."""
        async with self.apply_lock:
            try:
                now = await self.fingerprint()
            except FrrError as exc:
                log.info("change watch: FRR not readable: %s", exc)
                return None
            own = self.own()
        old, self._last = self._last, now
        wrote, self._writes_seen = own.writes != self._writes_seen, own.writes
        if old is None or old == now:
            return None
        # The agent wrote since the last read: the change is its own only if FRR still holds exactly
        # what it left (sessions settling after its apply included). Anything else was changed after
        # it, by someone else, even within this second: reported from the agent's config on.
        by_agent = wrote and now[0] == own.config_hash
        if wrote and not by_agent and own.config_hash is not None:
            old = (own.config_hash, *old[1:])
        if old[0] != now[0]:
            kind, summary = "config", "running config changed"
        elif old[1] != now[1]:
            kind, summary = "sessions", f"BGP sessions: {old[1]} -> {now[1]}"
        else:
            kind, summary = "advertised", f"prefixes sent: {old[2]} -> {now[2]}"
        if wrote and not by_agent:
            summary += " after the agent's own apply"
        report = {
            "v": 1, "nva_ip": self.nva_ip, "kind": kind, "at": datetime.now(UTC).isoformat(),
            "by": "agent" if by_agent else "outside-agent", "summary": summary[:300],
            "old_hash": old[0], "new_hash": now[0],
        }  # fmt: skip
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(report)
        return report

    async def watch(self) -> None:
        while True:
            await self.poll_once()
            await self._sleep(self.period_s)

    async def deliver(self) -> None:
        async with httpx.AsyncClient(transport=self._transport, timeout=10.0) as client:
            while True:
                report = await self.queue.get()
                await self._send(client, report)

    async def _send(self, client: httpx.AsyncClient, report: dict[str, Any]) -> bool:
        body = json.dumps(report).encode()
        for attempt in range(self.retries):
            keys = self.token()
            if not keys:
                return False
            try:
                # Current token first, then the next one: mid-rotation the reconciler may already hold
                # only the next (README "Tokens and rotation", step 2), and answers 401 to the current.
                for i, token in enumerate(keys):
                    headers = signed_headers(token, body, int(time.time()))
                    resp = await client.post(self.url, content=body, headers=headers)
                    if resp.status_code != 401 or i == len(keys) - 1:
                        break
                if resp.status_code < 300:
                    self.sent += 1
                    return True
                if resp.status_code < 500:
                    log.warning("change report refused (%d): not retried", resp.status_code)
                    return False
            except httpx.HTTPError as exc:
                log.info("change report: %s", exc)
            await self._sleep(min(30.0, 0.5 * 2**attempt))
        log.warning("change report dropped after %d tries", self.retries)
        return False

    async def run(self) -> None:
        """Watch and deliver until cancelled."""
        tasks = [asyncio.create_task(self.watch()), asyncio.create_task(self.deliver())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
