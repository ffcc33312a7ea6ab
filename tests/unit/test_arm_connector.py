"""The ARM connection pool opens a few connections at a time (issue #18: a pass's start-up).

A real TCP listener that takes each connection's first bytes (the TLS ClientHello) and never
answers: the handshakes in progress are exactly the connections whose hello has arrived.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from reconciler.arm import _Connector


async def test_at_most_opening_handshakes_are_in_progress_at_once() -> None:
    hellos = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hellos
        if await reader.read(1):
            hellos += 1
        await reader.read()  # hold the handshake open until the client goes away
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = ssl.create_default_context()
    connector = _Connector(opening=2, ssl=ctx, limit=8)
    async with server, aiohttp.ClientSession(connector=connector) as session:
        requests = [asyncio.create_task(session.get(f"https://127.0.0.1:{port}/")) for _ in range(6)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while hellos < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time for more hellos to arrive, if the connector let them go
        assert hellos == 2
        for r in requests:
            r.cancel()
        await asyncio.gather(*requests, return_exceptions=True)
