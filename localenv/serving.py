"""An aiohttp.web app served on 127.0.0.1 from a background thread: how our local servers listen.

Owns the thread and its event loop, binding the port (TLS when given an `ssl.SSLContext`), returning
from `start()` only once the port accepts, calling into that loop from other threads (`run`), and a
stop that ends the open connections: idle keep-alives at once, a request still running after
`grace` seconds is cancelled. The app's own `on_shutdown` hooks run before that wait (wake anything
a handler waits for there) and its `on_cleanup` hooks after it, on the same loop.
Must not know any route or what a server is for: the app brings its handlers.

    with BackgroundServer(app) as server:
        server.url                      # http://127.0.0.1:<port>
        server.run(coroutine)           # awaited on the server's loop, from this thread
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

T = TypeVar("T")
LOOPBACK = "127.0.0.1"


class BackgroundServer:
    """Serve `app` on `host`:`port` (0 = a free port) from a thread of its own.

    `access_log` None logs no requests; a logger gets one line per request with its method, path
    (never the query: it may carry a secret, a webhook URL's signature or a function key), status
    and duration.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "aiohttp-server",
        grace: float = 5.0,
        backlog: int = 128,
        access_log: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self._want_port = port
        self._ssl = ssl_context
        self._name = name
        self._grace = grace
        self._backlog = backlog
        self._access_log = access_log
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle --------------------------------------------------------------------------------

    def start(self) -> BackgroundServer:
        """Listen; return once the port accepts. A port that cannot be bound raises here."""
        if self._thread is not None:
            return self
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),), name=self._name, daemon=True)
        self._thread.start()
        try:
            self._port = ready.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    def stop(self) -> None:
        """Stop listening, end open connections (see the module doc) and the thread. Idempotent."""
        thread, self._thread = self._thread, None
        loop, stopping = self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=self._grace + 10)
        self._port = self._loop = self._stopping = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self, ready: Future[int]) -> None:
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=self._grace,
            access_log=self._access_log,
            access_log_class=_PathOnlyAccessLog,
        )
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._want_port, ssl_context=self._ssl, backlog=self._backlog)
            await site.start()
        except BaseException as exc:
            ready.set_exception(exc)
            await runner.cleanup()
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        ready.set_result(int(runner.addresses[0][1]))
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # ---- from other threads ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl is not None else 'http'}://{self.host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._loop

    @property
    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Await `coro` on the server's loop and return its result, from any other thread."""
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError("run() from the server's own loop would wait for itself: await instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)


class _PathOnlyAccessLog(AbstractAccessLogger):
    """`GET /api/drift 200 12 ms`: no query string, no client headers (secrets travel there)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.0f ms", request.method, request.path, response.status, time * 1000)
