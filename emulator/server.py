"""The ARM emulator: its public API, its life cycle, and the path from the wire to an answer.

Owns `ArmEmulator` (settings, start/stop, fault injection, the request log, lab-mode learned
sources) and the request pipeline: decode once, split agent and subscription paths, authenticate,
pass the gate (latency, throttling, faults), run the route, log. HTTPS is aiohttp's low-level
web server on one event loop in a background thread (`app_thread`). ARM routes live in
`arm_routes`, long-running operations in `operations`, the emulated agents in `agent_routes`.
It must not know the reconciler.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

from . import activity, agent_routes, arm_routes, derive, operations
from .app_thread import AppThread
from .arm_routes import Call, RouteQuery, Site, Update
from .certs import ensure_certs
from .faults import Fault
from .gate import Gate, reshape
from .messages import MALFORMED_BODY, Request, Response, arm_error, json_response
from .throttle import Throttle
from .world import World

__all__ = ["AGENT_OPS", "ARM_OPS", "KNOWN_OPS", "LRO_STYLES", "MALFORMED_BODY", "ArmEmulator", "RequestLog"]

log = logging.getLogger(__name__)

ARM_OPS = frozenset({r.op for r in arm_routes.ROUTES} | {"lro.poll", "activity.list"})
AGENT_OPS = agent_routes.OPS
KNOWN_OPS = ARM_OPS | AGENT_OPS
LRO_STYLES = operations.LRO_STYLES
SERVER = "ArmEmulator/1.0"


@dataclasses.dataclass(frozen=True)
class RequestLog:
    """One request as the emulator saw it. `at` is wall-clock seconds (time.time())."""

    method: str
    path: str
    op: str
    status: int
    subscription: str | None
    at: float


class ArmEmulator:
    """A local HTTPS ARM endpoint over a World. Use as a context manager (or start()/stop()).

    Options (all default off/cheap):
      page_size      bgpConnections per list page; 2 so paging is always exercised.
      latency        seconds to add per op name ("hub.get") or HTTP method ("get", "post", ...).
      lro_polls      poll rounds a long-running operation answers "in progress" before completing.
      lro_seconds    minimum wall time before a long-running operation completes.
      lro_style      how a route query's 202 points at its status (notes §5): "both" (Azure-AsyncOperation
                     + Location), "location", "azure-async-operation" (only that header, as in
                     Microsoft's examples), or "status-properties" (that header only, the result in the
                     final status body's `properties`). The world's `lro_style` / `lro_styles` override it.
      throttle       a Throttle: ARM's per-subscription token buckets (reads / writes).
      certs_dir      where the CA and leaf live; a temporary directory (removed on stop) if None.

    Requests are answered on one event loop: tests may change the world from their own thread
    under `world.lock` (held only briefly: the server waits for it).
    """

    def __init__(
        self,
        world: World,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 2,
        latency: Mapping[str, float] | None = None,
        lro_polls: int = 1,
        lro_seconds: float = 0.0,
        lro_style: str = "both",
        throttle: Throttle | None = None,
        certs_dir: str | Path | None = None,
        location: str = "westeurope",
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if lro_style not in LRO_STYLES:
            raise ValueError(f"lro_style must be one of {LRO_STYLES}")
        unknown_ops = sorted({o.op for o in world.lro_styles} - ARM_OPS)
        if unknown_ops:
            raise ValueError(f"lro_styles name unknown operations {unknown_ops}; known: {sorted(ARM_OPS)}")
        self.world = world
        self.page_size = page_size
        self.lro_style = lro_style
        self.location = location
        self._host = host
        self._port = port
        self._gate = Gate(dict(latency or {}), throttle)
        self._operations = operations.Operations(world, self._locations_url, polls=lro_polls, seconds=lro_seconds)
        self._agents = agent_routes.AgentEndpoints(world, self._gate, self._intent_applied)
        self._sources: dict[str, derive.LearnedSource] = {}
        self._log: list[RequestLog] = []
        self._log_lock = threading.Lock()  # appended on the server's loop, read from test threads
        self._own_certs_dir = certs_dir is None
        self._certs_dir = Path(certs_dir) if certs_dir is not None else Path(tempfile.mkdtemp(prefix="arm-emu-"))
        self._certs = ensure_certs(self._certs_dir)
        self._server: AppThread | None = None
        # Event Grid (emulator.events.EventPublisher): successful ARM writes and actions publish events.
        self.events: Any = None
        # Called with the NVA's IP right after an intent applied (emulator.agent_reports uses it).
        self.on_intent: Callable[[str], None] | None = None

    # ---- life cycle --------------------------------------------------------------------------------

    def start(self) -> ArmEmulator:
        if self._server is not None:
            return self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._certs.cert_file, self._certs.key_file)
        # aiohttp's low-level server, no router: ARM matches paths case-insensitively (aiohttp's router
        # does not) and answers its own 404/405 bodies, so `arm_routes` and `agent_routes` route.
        # A fleet benchmark opens hundreds of connections at once: a deeper accept queue.
        server = AppThread(
            self._wire, host=self._host, port=self._port, ssl_context=ctx, name="arm-emulator", backlog=256
        )
        self._server = server.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        if self._own_certs_dir:
            shutil.rmtree(self._certs_dir, ignore_errors=True)

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- public API --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"https://{self._host}:{self.port}"

    @property
    def ca_file(self) -> str:
        return str(self._certs.ca_file)

    @property
    def latency(self) -> dict[str, float]:
        return self._gate.latency

    @latency.setter
    def latency(self, value: Mapping[str, float]) -> None:
        self._gate.latency = dict(value)

    @property
    def lro_polls(self) -> int:
        return self._operations.polls

    @lro_polls.setter
    def lro_polls(self, value: int) -> None:
        self._operations.polls = value

    @property
    def lro_seconds(self) -> float:
        return self._operations.seconds

    @lro_seconds.setter
    def lro_seconds(self, value: float) -> None:
        self._operations.seconds = value

    def agent_url(self, nva_ip: str) -> str:
        """Base URL of the emulated agent for one NVA (the contract's paths go below it)."""
        return f"{self.base_url}/agents/{nva_ip}"

    def inject(self, op: str, fault: Fault, *, subscription: str | None = None, resource: str | None = None) -> None:
        """Arm a fault for an operation, optionally only for one subscription or resource name."""
        if op not in KNOWN_OPS:
            raise ValueError(f"unknown operation {op!r}; known: {sorted(KNOWN_OPS)}")
        self._gate.faults.inject(op, fault, subscription, resource)

    def clear_faults(self) -> None:
        self._gate.faults.clear()

    def set_learned_source(self, peer_ip: str, fn: derive.LearnedSource | None) -> None:
        """Lab mode: answer learned routes for the peering with `peer_ip` from `fn(instance_index)`."""
        with self.world.lock:
            if fn is None:
                self._sources.pop(peer_ip, None)
            else:
                self._sources[peer_ip] = fn

    @property
    def requests(self) -> list[RequestLog]:
        with self._log_lock:
            return list(self._log)

    def reset_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def lro_style_for(self, op: str, subscription: str | None = None) -> str:
        """The style an operation answers in: the world's per-operation choice, the world's, or ours."""
        return operations.style_for(self.world, self.lro_style, op, subscription)

    # ---- request pipeline --------------------------------------------------------------------------

    async def _wire(self, request: web.BaseRequest) -> web.StreamResponse:
        split = urlsplit(request.raw_path)
        req = Request(
            method=request.method,
            raw_path=split.path,
            segments=tuple(unquote(s) for s in split.path.split("/") if s),
            query={k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
        )
        resp = await self.handle(req)
        headers = {"Server": SERVER, "x-ms-request-id": str(uuid.uuid4())}
        if resp.body:
            headers["Content-Type"] = "application/json; charset=utf-8"
        headers.update(resp.headers)
        return web.Response(status=resp.status, body=resp.body, headers=headers)

    async def handle(self, req: Request) -> Response:
        """Answer one request and log it. Never raises: a bug becomes a 500 ARM error.

        Looked up on the instance per request, so a test can wrap it (e.g. to change the world first).
        """
        op, sub = "unknown", None
        try:
            op, sub, resp = await self._dispatch(req)
        except Exception:
            log.exception("emulator bug while serving %s %s", req.method, req.path)
            resp = arm_error(500, "InternalServerError", "emulator bug; see the server log")
        with self._log_lock:
            self._log.append(RequestLog(req.method, req.path, op, resp.status, sub, time.time()))
        if self.events is not None and resp.status < 300 and op not in AGENT_OPS:
            self.events.after_request(req.method, req.path, req.bearer())
        return resp

    async def _dispatch(self, req: Request) -> tuple[str, str | None, Response]:
        low = req.lower
        if low[:1] == ("agents",):
            op, resp = await self._agents.answer(req)
            return op, None, resp
        if len(low) < 2 or low[0] != "subscriptions":
            return "unknown", None, arm_error(404, "InvalidResourceType", f"No route for {req.path}")
        sub = req.segments[1]
        if req.bearer() is None:
            message = "Authentication failed. The 'Authorization' header is missing."
            return "unknown", sub, arm_error(401, "AuthenticationFailed", message)
        if (
            len(low) == 8
            and low[2:5] == ("providers", "microsoft.network", "locations")
            and low[6] in ("operations", "operationresults")
        ):
            return "lro.poll", sub, await self._poll(req, sub, low[6] == "operations", req.segments[7])
        if low[2:] == ("providers", "microsoft.insights", "eventtypes", "management", "values") and req.method == "GET":
            return "activity.list", sub, json_response(200, {"value": activity.entries(self.events, sub, req.query)})
        found = arm_routes.match(req)
        if isinstance(found, Response):
            return "unknown", sub, found
        route, group, names = found
        early = await self._gate.enter(route.op, req.method, sub, names, arm=True)
        if isinstance(early, Response):
            return route.op, sub, early
        site = Site(self.world, self._sources, self.page_size, self.base_url, self.location)
        outcome = route.run(Call(req, site, sub, group, names, route.op, early))
        if isinstance(outcome, RouteQuery):
            style = self.lro_style_for(route.op, sub)
            return route.op, sub, self._operations.start_query(sub, names, style, early, outcome.result, outcome.empty)
        if isinstance(outcome, Update):
            outcome = self._operations.start_update(sub, names, outcome.answer, outcome.done)
        return route.op, sub, reshape(outcome, early)

    async def _poll(self, req: Request, sub: str, status_url: bool, op_id: str) -> Response:
        early = await self._gate.enter("lro.poll", req.method, sub, self._operations.names(op_id), arm=True)
        if isinstance(early, Response):
            return early
        if req.method != "GET":
            return arm_error(405, "MethodNotAllowed", "Operation URLs are read with GET.")
        return self._operations.poll(sub, op_id, status_url=status_url)

    def _locations_url(self, subscription: str) -> str:
        return f"{self.base_url}/subscriptions/{subscription}/providers/Microsoft.Network/locations/{self.location}"

    def _intent_applied(self, ip: str) -> None:
        if self.on_intent is not None:
            self.on_intent(ip)
