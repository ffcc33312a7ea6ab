"""Serve one aiohttp.web application from its own event loop in a daemon thread (HTTP or HTTPS).

Owns the life cycle every local server shares: bind (127.0.0.1:0 by default), wait until
listening, stop (close keep-alive connections, give in-flight requests a bounded grace, end the
loop without leaving tasks or transports behind). Used by the ARM emulator and by `localenv`'s
servers. It must not know routes, TLS material or what the application serves.

    with AppThread(app, ssl_context=ctx, name="arm-emulator") as server:
        urlopen(f"{server.url}/path")
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from ssl import SSLContext
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
# aiohttp's low-level server: every request to one handler, no router (for servers that route themselves).
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class AppThread:
    """One aiohttp application (or one low-level handler), one event loop, one thread.

    `start()` returns once it listens. Handlers run on that loop: a handler that blocks (a lock
    held by a test thread, CPU work) holds up every connection that long; keep such sections short.
    """

    def __init__(
        self,
        app: web.Application | Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: SSLContext | None = None,
        name: str = "aiohttp-server",
        backlog: int = 128,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._ssl = ssl_context
        self._name = name
        self._backlog = backlog
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.BaseRunner | None = None
        self._bound: int | None = None

    # ---- life cycle --------------------------------------------------------------------------------

    def start(self) -> AppThread:
        """Bind and serve; raises what binding raised (a port in use, a bad certificate)."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._serve, args=(loop, ready), name=self._name, daemon=True)
        thread.start()
        try:
            ready.result(timeout=30)
        except BaseException:
            thread.join(timeout=5)
            raise
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Stop listening, close connections (in-flight requests get `shutdown_timeout`), end the thread."""
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop = self._thread = self._runner = None
        self._bound = None
        if loop is None or thread is None:
            return
        if runner is not None:
            done = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            # On a timeout the loop still ends below; its leftovers are cancelled there.
            with contextlib.suppress(concurrent.futures.TimeoutError):
                done.result(timeout=self._shutdown_timeout + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def __enter__(self) -> AppThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- where it listens --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._bound is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._bound

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl is not None else 'http'}://{self.host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's loop, for `asyncio.run_coroutine_threadsafe` (or `call`)."""
        if self._loop is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ---- the thread --------------------------------------------------------------------------------

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            ready.set_exception(exc)
            self._close_loop(loop)
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            self._close_loop(loop)

    async def _open(self) -> None:
        # No access log: a fleet benchmark sends thousands of requests, and the log costs CPU per line.
        runner: web.BaseRunner
        if isinstance(self.app, web.Application):
            runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        else:
            server = web.Server(self.app, access_log=None)
            runner = web.ServerRunner(server, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port, ssl_context=self._ssl, backlog=self._backlog)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound = int(runner.addresses[0][1])

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
