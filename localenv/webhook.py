"""A local stand-in for a Teams Workflows webhook: a real HTTP server on 127.0.0.1 (aiohttp.web in a
background thread, `emulator.app_thread`).

Owns recording requests and answering them as scripted (202, 429 + Retry-After, 500, or hang).
Must not know what a card means; tests and the demo read the recorded bodies themselves. Logs no
request lines: the URL carries the webhook's signature, as the real one's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from emulator.app_thread import AppThread
from reconciler import cards

# Shaped like a real Workflows trigger URL, so redaction is tested against the real shape.
DEFAULT_PATH = (
    "/workflows/0c3a5d0e7f1b4a6c9d2e8f7a6b5c4d3e/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SECRETlocalwebhooksig0123456789"
)

RECORD_UP_TO = 64 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """How to answer one request. `hang` > 0: say nothing for that long (or until the receiver
    stops), then drop the connection, so the client sees a timeout."""

    status: int = 202
    retry_after: str | None = None
    body: bytes = b""
    hang: float = 0.0


ACCEPT = Reply(202)


def throttle(retry_after: str = "1") -> Reply:
    return Reply(429, retry_after=retry_after, body=b'{"error":{"code":"TooManyRequests"}}')


def fail(status: int = 500) -> Reply:
    return Reply(status, body=b'{"error":{"code":"InternalServerError"}}')


def hang(seconds: float = 30.0) -> Reply:
    return Reply(0, hang=seconds)


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and what it got (`status` None = no answer: hung)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class WebhookReceiver:
    """Start with `with WebhookReceiver() as hook:`; POST to `hook.url`. `script(...)` queues
    replies consumed one per request in arrival order; after that, `default` answers."""

    default: Reply = ACCEPT
    path: str = DEFAULT_PATH
    received: list[Received] = field(default_factory=list)
    _script: deque[Reply] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # tests read from their own thread
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: AppThread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("receiver not started")
        return f"{self._server.url}{self.path}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.accepted]

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Poll until `count` requests arrived (any answer); raise after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"{len(self.requests())} requests after {timeout} s, wanted {count}")

    def start(self) -> WebhookReceiver:
        if self._server is not None:
            return self
        # Record whatever arrives, however large (aiohttp would refuse over 1 MiB unrecorded): a test
        # judging what was sent against Teams' 28 KB limit must see the oversized body itself.
        app = web.Application(client_max_size=RECORD_UP_TO)
        for method in ("POST", "GET", "PUT"):  # heartbeat pings may use GET
            app.router.add_route(method, "/{tail:.*}", self._handle)
        app.on_shutdown.append(self._wake_hanging)
        self._release = asyncio.Event()  # a fresh one per start: it binds to the server's loop
        self._server = AppThread(app, name="webhook").start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # wakes hanging handlers first (on_shutdown), so stopping does not wait for them

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _wake_hanging(self, app: web.Application) -> None:
        self._release.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.raw_path  # path and query exactly as sent
        wrong_path = urlsplit(target).path != urlsplit(self.path).path
        with self._lock:
            scripted = self._script.popleft() if self._script and not wrong_path else self.default
            reply = Reply(404) if wrong_path else scripted
            headers = {k.lower(): v for k, v in request.headers.items()}
            status = None if reply.hang else reply.status
            arrival = time.monotonic()
            self.received.append(Received(request.method, target, headers, body, status, arrival))
        if reply.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), reply.hang)
            # Drop the connection without an answer (the client sees it closed, or its own timeout).
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never written: the connection is gone
        head = {"Content-Type": "application/json"}
        if reply.retry_after is not None:
            head["Retry-After"] = reply.retry_after
        return web.Response(status=reply.status, body=reply.body, headers=head)


def main() -> None:
    """`python -m localenv.webhook`: print the URL, then each card title as it arrives."""
    with WebhookReceiver() as hook:
        print(hook.url, flush=True)
        seen = 0
        try:
            while True:
                got = hook.requests()
                for r in got[seen:]:
                    try:
                        header = cards.header_texts(r.json())
                    except ValueError:
                        header = []
                    print(f"{r.method} → {r.status}: {header[0] if header else f'{len(r.body)} bytes'}", flush=True)
                seen = len(got)
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
