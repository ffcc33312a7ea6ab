"""AppThread: an aiohttp application served from a background thread starts, answers and stops cleanly."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from emulator.app_thread import AppThread
from emulator.certs import ensure_certs


def hello_app(delay_s: float = 0.0, entered: threading.Event | None = None) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        if entered is not None:
            entered.set()
        await asyncio.sleep(delay_s)
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    return app


def test_serves_http_until_stopped() -> None:
    with AppThread(hello_app()) as server:
        with urllib.request.urlopen(f"{server.url}/a/b", timeout=5) as resp:
            assert resp.read() == b'{"path": "/a/b"}'
        port = server.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


def test_serves_one_low_level_handler_for_every_path_and_method() -> None:
    async def echo(request: web.BaseRequest) -> web.Response:
        return web.Response(text=f"{request.method} {request.raw_path}")

    with AppThread(echo) as server:
        req = urllib.request.Request(f"{server.url}/ANY/Path%2Fx?q=1", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read() == b"DELETE /ANY/Path%2Fx?q=1"


def test_serves_https_with_the_given_context(tmp_path: Path) -> None:
    certs = ensure_certs(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert_file, certs.key_file)
    with AppThread(hello_app(), ssl_context=ctx) as server:
        assert server.url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context(cafile=str(certs.ca_file))
        with urllib.request.urlopen(f"{server.url}/x", timeout=5, context=client) as resp:
            assert resp.status == 200


def test_a_port_in_use_fails_start_with_the_bind_error() -> None:
    with AppThread(hello_app()) as first, pytest.raises(OSError):
        AppThread(hello_app(), port=first.port).start()


def closed_by_peer(conn: socket.socket) -> bool:
    conn.settimeout(5)
    while chunk := conn.recv(1024):
        assert b"200 OK" not in chunk  # the slow request is cut off, not answered late
    return True


def test_stop_closes_idle_keep_alive_connections_and_bounds_in_flight_requests() -> None:
    entered = threading.Event()
    server = AppThread(hello_app(delay_s=30, entered=entered), shutdown_timeout=0.2).start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    busy = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert entered.wait(5)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    with idle, busy:
        assert closed_by_peer(idle) and closed_by_peer(busy)
