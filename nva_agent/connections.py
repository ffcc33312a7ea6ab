"""Connection limits for the agent's HTTP server (uvicorn's h11 protocol, subclassed).

uvicorn bounds idle keep-alive connections but not a request that arrives slowly: a client
that sends half a request keeps its connection (and a file descriptor) forever (slowloris).
This owns three limits: a read deadline (the whole request, headers and body, must arrive
within `read_timeout` of connecting or of the previous response), a total connection limit
and a per-source-address limit; a connection over a limit is closed at once. It must not know
the app: it sits below HTTP routing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def guarded_protocol(read_timeout: float, max_connections: int, max_per_client: int) -> type[H11Protocol]:
    """An H11Protocol class with these limits (uvicorn builds one instance per connection)."""
    per_client: Counter[str] = Counter()
    total = [0]

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else "?"
            if total[0] >= max_connections or per_client[host] >= max_per_client:
                log.warning("connection from %s refused: connection limit reached", host)
                transport.abort()
                return
            self._counted = host
            per_client[host] += 1
            total[0] += 1
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                per_client[self._counted] -= 1
                if per_client[self._counted] <= 0:
                    del per_client[self._counted]
                total[0] -= 1
                self._counted = None
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            cycle: Any = self.cycle
            if cycle is not None and not cycle.more_body and not cycle.response_complete:
                self._disarm()  # the whole request is in: the app may take its time to answer

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets its own deadline

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                host = self.client[0] if self.client else "?"
                log.warning("connection from %s closed: request not received within %.0f s", host, read_timeout)
                self.transport.abort()

    return Guarded
