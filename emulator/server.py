"""The ARM emulator's HTTPS server: routing, auth, throttling, faults, long-running operations, request log.

Owns the wire: ARM paths (case-insensitive, URL-decoded, any api-version), LRO sequences (notes §5),
error bodies, paging, and the emulated NVA agent endpoints under /agents/{ip}. Route propagation
lives in `derive`, resource shapes in `resources`, the agent contract in `agent`; this module only
wires them to HTTP. It must not know the reconciler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from reconciler.asn import peer_asn_problem

from . import activity, agent, derive, resources
from .certs import ensure_certs
from .faults import RETRY_AFTER_STATUSES, Fault, FaultBook, FaultKind
from .throttle import Throttle, Throttler
from .world import BgpConnection, LroStyle, World

log = logging.getLogger(__name__)

# Every malformed body is the same truncated JSON, so a test can recognise it.
MALFORMED_BODY = b'{"id": "/subscriptions/truncated'
ARM_OPS = frozenset(
    {
        "hub.get", "hub.put", "hub.ipconfigs", "bgp.list", "bgp.get", "bgp.put", "bgp.delete",
        "routes.learned", "routes.advertised", "gateway.get", "gateway.learned", "gateway.advertised",
        "gateway.peers", "firewall.get", "firewall.health", "routetable.get", "subnet.get", "vnet.get",
        "nic.routes", "lro.poll", "activity.list",
    }
)  # fmt: skip
LRO_STYLES: tuple[LroStyle, ...] = ("location", "azure-async-operation", "both", "status-properties")
MAX_OPERATIONS = 20_000  # LRO records kept for polling; the oldest half goes when full
AGENT_OPS = frozenset({"agent.health", "agent.state", "agent.intent"})
KNOWN_OPS = ARM_OPS | AGENT_OPS
_AGENT_ROUTES = {("health",): "agent.health", ("state",): "agent.state", ("bgp", "intent"): "agent.intent"}


@dataclasses.dataclass(frozen=True)
class RequestLog:
    """One request as the emulator saw it. `at` is wall-clock seconds (time.time())."""

    method: str
    path: str
    op: str
    status: int
    subscription: str | None
    at: float


@dataclasses.dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), dict(headers or {}))


def _arm_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> _Response:
    return _json(status, resources.arm_error(code, message), headers)


def _not_found(kind: str, name: str) -> _Response:
    return _arm_error(404, "ResourceNotFound", f"The Resource '{kind}/{name}' was not found.")


@dataclasses.dataclass(frozen=True)
class _Request:
    method: str
    raw_path: str  # as sent (still URL-quoted), for building nextLink
    segments: tuple[str, ...]  # URL-decoded, original case
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return "/" + "/".join(self.segments)

    def json_body(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


@dataclasses.dataclass
class _Call:
    """A routed ARM call: the request, its identity, and the fault (if any) this request drew."""

    req: _Request
    subscription: str
    resource_group: str
    args: tuple[str, ...]
    fault: Fault | None
    op: str = ""


@dataclasses.dataclass
class _Operation:
    """A long-running operation in flight (learned/advertised routes, gateway queries)."""

    subscription: str
    names: tuple[str, ...]
    result: object
    failed: Fault | None
    malformed: bool
    polls_left: int
    ready_at: float
    on_done: Callable[[], None] | None = None  # a PUT's world change lands when the operation ends
    result_in_status: bool = False  # style "status-properties": the final status body carries the result


_Handler = Callable[[_Call], _Response]


@dataclasses.dataclass(frozen=True)
class _Route:
    method: str
    pattern: tuple[str, ...]  # after /providers/Microsoft.Network; "*" captures a name
    op: str
    handler: _Handler
    lro: bool = False


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
        self.latency = dict(latency or {})
        self.lro_polls = lro_polls
        self.lro_seconds = lro_seconds
        self.lro_style = lro_style
        self.location = location
        self._host = host
        self._port = port
        self._throttler = Throttler(throttle) if throttle is not None else None
        self._faults = FaultBook()
        self._sources: dict[str, derive.LearnedSource] = {}
        self._ops: dict[str, _Operation] = {}
        self._ops_lock = threading.Lock()
        self._log: list[RequestLog] = []
        self._log_lock = threading.Lock()
        self._agent_lock = threading.Lock()  # serialises intents, like the real agent's apply lock
        self._started = time.monotonic()
        self._own_certs_dir = certs_dir is None
        self._certs_dir = Path(certs_dir) if certs_dir is not None else Path(tempfile.mkdtemp(prefix="arm-emu-"))
        self._certs = ensure_certs(self._certs_dir)
        self._server: _TlsServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._route_table()
        # Event Grid (emulator.events.EventPublisher): successful ARM writes and actions publish events.
        self.events: Any = None
        # Called with the NVA's IP right after an intent applied (emulator.agent_reports uses it).
        self.on_intent: Callable[[str], None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> ArmEmulator:
        if self._server is not None:
            return self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._certs.cert_file, self._certs.key_file)
        self._server = _TlsServer((self._host, self._port), _Handler_, ctx, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="arm-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
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
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"https://{self._host}:{self.port}"

    @property
    def ca_file(self) -> str:
        return str(self._certs.ca_file)

    def agent_url(self, nva_ip: str) -> str:
        """Base URL of the emulated agent for one NVA (the contract's paths go below it)."""
        return f"{self.base_url}/agents/{nva_ip}"

    def inject(self, op: str, fault: Fault, *, subscription: str | None = None, resource: str | None = None) -> None:
        """Arm a fault for an operation, optionally only for one subscription or resource name."""
        if op not in KNOWN_OPS:
            raise ValueError(f"unknown operation {op!r}; known: {sorted(KNOWN_OPS)}")
        self._faults.inject(op, fault, subscription, resource)

    def clear_faults(self) -> None:
        self._faults.clear()

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

    # ---- request pipeline --------------------------------------------------------------------------

    def handle(self, req: _Request) -> _Response:
        """Answer one request and log it. Never raises: a bug becomes a 500 ARM error."""
        op, sub = "unknown", None
        try:
            op, sub, resp = self._dispatch(req)
        except Exception:
            log.exception("emulator bug while serving %s %s", req.method, req.path)
            resp = _arm_error(500, "InternalServerError", "emulator bug; see the server log")
        with self._log_lock:
            self._log.append(RequestLog(req.method, req.path, op, resp.status, sub, time.time()))
        if self.events is not None and resp.status < 300 and op not in AGENT_OPS:
            self.events.after_request(req.method, req.path, _bearer(req.headers))
        return resp

    def _dispatch(self, req: _Request) -> tuple[str, str | None, _Response]:
        low = tuple(s.lower() for s in req.segments)
        if low[:1] == ("agents",):
            return self._dispatch_agent(req, low)
        if len(low) < 2 or low[0] != "subscriptions":
            return "unknown", None, _arm_error(404, "InvalidResourceType", f"No route for {req.path}")
        sub = req.segments[1]
        if not _bearer(req.headers):
            return (
                "unknown",
                sub,
                _arm_error(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing.",
                ),
            )
        if (
            len(low) == 8
            and low[2:5] == ("providers", "microsoft.network", "locations")
            and low[6] in ("operations", "operationresults")
        ):
            return "lro.poll", sub, self._poll(req, sub, low[6] == "operations", req.segments[7])
        if low[2:] == ("providers", "microsoft.insights", "eventtypes", "management", "values") and req.method == "GET":
            return "activity.list", sub, _json(200, {"value": activity.entries(self.events, sub, req.query)})
        if len(low) < 8 or low[2] != "resourcegroups" or low[4:6] != ("providers", "microsoft.network"):
            return "unknown", sub, _arm_error(404, "InvalidResourceType", f"No route for {req.path}")
        rg, tail, tail_low = req.segments[3], req.segments[6:], low[6:]
        matched_path = False
        for route in self._routes:
            args = _match(route.pattern, tail, tail_low)
            if args is None:
                continue
            matched_path = True
            if route.method != req.method:
                continue
            call = _Call(req, sub, rg, args, None, route.op)
            return route.op, sub, self._run(route, call)
        if matched_path:
            return (
                "unknown",
                sub,
                _arm_error(405, "MethodNotAllowed", f"{req.method} is not allowed on {req.path}"),
            )
        return "unknown", sub, _arm_error(404, "InvalidResourceType", f"No route for {req.path}")

    def _run(self, route: _Route, call: _Call) -> _Response:
        early = self._pre(route.op, call.req.method, call.subscription, call.args, arm=True)
        if isinstance(early, _Response):
            return early
        call.fault = early
        resp = route.handler(call)
        if early is not None and not route.lro and resp.status < 300:
            if early.kind is FaultKind.MALFORMED:
                resp.body = MALFORMED_BODY
            elif early.kind is FaultKind.BODY:
                resp.body = json.dumps(early.payload).encode()
        return resp

    def _pre(
        self, op: str, method: str, sub: str | None, names: tuple[str, ...], arm: bool
    ) -> _Response | Fault | None:
        """Latency, throttling and fault injection shared by every operation, in that order."""
        fault_delay, fault = self._faults.take(op, sub, names)
        delay = self.latency.get(op, self.latency.get(method.lower(), 0.0)) + fault_delay
        if delay > 0:
            time.sleep(delay)
        if arm and sub is not None and self._throttler is not None:
            write = method in ("PUT", "DELETE", "PATCH")
            wait, _remaining = self._throttler.spend(sub, write)
            if wait is not None:
                return _arm_error(
                    429,
                    "SubscriptionRequestsThrottled",
                    f"Number of {'write' if write else 'read'} requests for subscription '{sub}' "
                    f"exceeded the limit. Please try again after '{wait}' seconds.",
                    {"Retry-After": str(wait)},
                )
        if fault is None:
            return None
        if fault.kind not in (FaultKind.THROTTLE, FaultKind.ERROR, FaultKind.BUSY):
            return fault  # shapes the answer (LRO failure, empty map, bad JSON): the handler applies it
        headers: dict[str, str] = {}
        if fault.retry_after is not None and fault.status in RETRY_AFTER_STATUSES:
            # azure-core's retry parses Retry-After as a float (only the LRO poller insists on int),
            # so a fractional value lets tests wait 50 ms instead of a whole second.
            ra = fault.retry_after
            headers["Retry-After"] = str(int(ra)) if ra == int(ra) else f"{ra:g}"
            if ra != int(ra):
                headers["retry-after-ms"] = str(round(ra * 1000))
        if not arm:  # the agent answers errors the FastAPI way
            return _json(fault.status, {"detail": f"{fault.code}: {fault.message}"}, headers)
        return _arm_error(fault.status, fault.code, fault.message, headers)

    # ---- ARM handlers ------------------------------------------------------------------------------

    def _route_table(self) -> list[_Route]:
        hub, conn = ("virtualhubs", "*"), ("virtualhubs", "*", "bgpconnections", "*")
        gw = ("virtualnetworkgateways", "*")
        return [
            _Route("GET", hub, "hub.get", self._hub_get),
            _Route("PUT", hub, "hub.put", self._hub_put),
            _Route("GET", (*hub, "ipconfigurations"), "hub.ipconfigs", self._hub_ipconfigs),
            _Route("GET", (*hub, "bgpconnections"), "bgp.list", self._bgp_list),
            _Route("GET", conn, "bgp.get", self._bgp_get),
            _Route("PUT", conn, "bgp.put", self._bgp_put),
            _Route("DELETE", conn, "bgp.delete", self._bgp_delete),
            _Route("POST", (*conn, "learnedroutes"), "routes.learned", self._routes_learned, lro=True),
            _Route("POST", (*conn, "advertisedroutes"), "routes.advertised", self._routes_advertised, lro=True),
            _Route("GET", gw, "gateway.get", self._gateway_get),
            _Route("POST", (*gw, "getlearnedroutes"), "gateway.learned", self._gateway_learned, lro=True),
            _Route("POST", (*gw, "getadvertisedroutes"), "gateway.advertised", self._gateway_advertised, lro=True),
            _Route("POST", (*gw, "getbgppeerstatus"), "gateway.peers", self._gateway_peers, lro=True),
            _Route("GET", ("azurefirewalls", "*"), "firewall.get", self._firewall_get),
            _Route(
                "GET",
                ("azurefirewalls", "*", "providers", "microsoft.insights", "metrics"),
                "firewall.health",
                self._firewall_metrics,
            ),
            _Route("GET", ("routetables", "*"), "routetable.get", self._route_table_get),
            _Route("GET", ("virtualnetworks", "*", "subnets", "*"), "subnet.get", self._subnet_get),
            _Route("GET", ("virtualnetworks", "*"), "vnet.get", self._vnet_get),
            _Route("POST", ("networkinterfaces", "*", "effectiveroutetable"), "nic.routes", self._nic_routes, lro=True),
        ]

    def _hub_get(self, c: _Call) -> _Response:
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            return _not_found("virtualHubs", c.args[0]) if rs is None else _json(200, resources.hub_json(rs))

    def _hub_put(self, c: _Call) -> _Response:
        """A PUT replaces the hub with the body (ARM semantics, not a merge) and runs as an LRO.

        What the body leaves out falls back to its default, so a client that sends only
        `allowBranchToBranchTraffic` resets the routing preference and capacity: GET, change, PUT
        the whole resource. `If-Match` is honoured (412 when the hub changed since it was read).
        """
        try:
            body = c.req.json_body()
        except ValueError:
            return _arm_error(400, "InvalidRequestFormat", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("location"), str):
            return _arm_error(400, "LocationRequired", "The location property is required for this definition.")
        props = body.get("properties", {})
        if not isinstance(props, dict):
            return _arm_error(400, "InvalidRequestFormat", "Expected a virtualHub with 'properties'.")
        # hubRoutingPreference: the spec's HubRoutingPreference enum (ExpressRoute, VpnGateway, ASPath),
        # default ExpressRoute. minCapacity: "Azure Route Server capacity" (Microsoft Learn) gives the
        # default of two routing infrastructure units; the upper bound 50 was not found for Route Server.
        b2b = props.get("allowBranchToBranchTraffic", False)
        pref = props.get("hubRoutingPreference", "ExpressRoute")
        scale = props.get("virtualRouterAutoScaleConfiguration") or {}
        capacity = scale.get("minCapacity", 2) if isinstance(scale, dict) else None
        if not isinstance(b2b, bool) or pref not in ("ExpressRoute", "VpnGateway", "ASPath"):
            return _arm_error(400, "InvalidRequestFormat", "allowBranchToBranchTraffic/hubRoutingPreference")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 2 <= capacity <= 50:
            return _arm_error(400, "InvalidRequestFormat", "virtualRouterAutoScaleConfiguration.minCapacity")
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            if rs is None:
                # The emulator does not create Route Servers; the reconciler never should either.
                return _not_found("virtualHubs", c.args[0])
            match = c.req.headers.get("if-match")
            if match is not None and match.strip() not in ("*", resources.hub_etag(rs)):
                return _arm_error(
                    412, "PreconditionFailed", f"The ETag {match!r} does not match the hub's current ETag."
                )
            rs.branch_to_branch, rs.routing_preference, rs.min_capacity = b2b, pref, capacity
            rs.generation += 1
            rs.provisioning_state = "Updating"
            answer = resources.hub_json(rs)

            def done() -> None:
                rs.provisioning_state = "Succeeded"

        return self._start_put(c, answer, done)

    def _hub_ipconfigs(self, c: _Call) -> _Response:
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            if rs is None:
                return _not_found("virtualHubs", c.args[0])
            return _json(200, {"value": [resources.hub_ip_configuration_json(rs)]})

    def _bgp_list(self, c: _Call) -> _Response:
        try:
            start = int(c.req.query.get("$skiptoken", "0"))
        except ValueError:
            return _arm_error(400, "InvalidSkipToken", "Bad $skiptoken.")
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            if rs is None:
                return _not_found("virtualHubs", c.args[0])
            page = rs.connections[start : start + self.page_size]
            payload: dict[str, object] = {"value": [resources.connection_json(rs, x) for x in page]}
            if start + self.page_size < len(rs.connections):
                version = c.req.query.get("api-version", "2026-03-01")
                next_start = start + self.page_size
                payload["nextLink"] = f"{self.base_url}{c.req.raw_path}?api-version={version}&$skiptoken={next_start}"
            return _json(200, payload)

    def _bgp_get(self, c: _Call) -> _Response:
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            conn = rs.connection(c.args[1]) if rs is not None else None
            if rs is None or conn is None:
                return _not_found("virtualHubs/bgpConnections", f"{c.args[0]}/{c.args[1]}")
            return _json(200, resources.connection_json(rs, conn))

    def _bgp_put(self, c: _Call) -> _Response:
        try:
            body = c.req.json_body()
        except ValueError:
            return _arm_error(400, "InvalidRequestFormat", "The request body is not valid JSON.")
        props = body.get("properties") if isinstance(body, dict) else None
        peer_ip = props.get("peerIp") if isinstance(props, dict) else None
        peer_asn = props.get("peerAsn") if isinstance(props, dict) else None
        if not isinstance(peer_ip, str) or not _is_ip(peer_ip):
            return _arm_error(400, "InvalidRequestFormat", "properties.peerIp must be an IP address.")
        if isinstance(peer_asn, bool) or not isinstance(peer_asn, int):
            return _arm_error(400, "InvalidRequestFormat", "properties.peerAsn must be an ASN.")
        # Route Server takes only 16-bit ASNs outside the reserved ranges (reconciler.asn, from the
        # Route Server FAQ). Azure's exact error code for this case is not documented; 400 is.
        problem = peer_asn_problem(peer_asn)
        if problem is not None:
            return _arm_error(400, "InvalidRequestFormat", f"properties.peerAsn: {problem}.")
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            if rs is None:
                return _not_found("virtualHubs", c.args[0])
            conn = rs.connection(c.args[1])
            if conn is None:
                conn = BgpConnection(c.args[1], peer_ip, peer_asn)
                rs.connections.append(conn)
            conn.peer_ip, conn.peer_asn, conn.provisioning_state = peer_ip, peer_asn, "Succeeded"
            # The session comes up on the instances the NVA (if any) is configured to peer with.
            nva = self.world.find_nva(peer_ip)
            configured = {n.ip for n in agent.configured_neighbors(self.world, nva)} if nva else set()
            conn.connected_instances = [i for i, ip in enumerate(rs.ips) if nva and ip in configured]
            conn.provisioning_state = "Updating"
            answer = resources.connection_json(rs, conn)

            def done() -> None:
                conn.provisioning_state = "Succeeded"

        return self._start_put(c, answer, done)

    def _bgp_delete(self, c: _Call) -> _Response:
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            conn = rs.connection(c.args[1]) if rs is not None else None
            if rs is None or conn is None:
                return _Response(204)
            rs.connections.remove(conn)
            return _Response(200)

    def _routes_learned(self, c: _Call) -> _Response:
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            conn = rs.connection(c.args[1]) if rs is not None else None
            if rs is None or conn is None:
                return _not_found("virtualHubs/bgpConnections", f"{c.args[0]}/{c.args[1]}")
            result: dict[str, object] = dict(derive.learned_routes(self.world, rs, conn, self._sources))
            if rs.learned_value_null:
                result["value"] = None
        return self._start_lro(c, result, {})

    def _routes_advertised(self, c: _Call) -> _Response:
        with self.world.lock:
            rs = self.world.find_route_server(c.subscription, c.resource_group, c.args[0])
            conn = rs.connection(c.args[1]) if rs is not None else None
            if rs is None or conn is None:
                return _not_found("virtualHubs/bgpConnections", f"{c.args[0]}/{c.args[1]}")
            result = derive.advertised_routes(self.world, rs, conn)
        return self._start_lro(c, result, {})

    def _gateway_get(self, c: _Call) -> _Response:
        with self.world.lock:
            gw = self.world.find_gateway(c.subscription, c.resource_group, c.args[0])
            return (
                _not_found("virtualNetworkGateways", c.args[0])
                if gw is None
                else _json(200, resources.gateway_json(gw))
            )

    def _gateway_learned(self, c: _Call) -> _Response:
        with self.world.lock:
            gw = self.world.find_gateway(c.subscription, c.resource_group, c.args[0])
            if gw is None:
                return _not_found("virtualNetworkGateways", c.args[0])
            result = {"value": derive.gateway_learned(self.world, gw, self._sources)}
        return self._start_lro(c, result, {"value": []})

    def _nic_routes(self, c: _Call) -> _Response:
        # POST .../networkInterfaces/{nic}/effectiveRouteTable: 200 or 202 then the EffectiveRouteListResult
        # (NetworkInterfaceEffectiveRouteTableList.json in azure-rest-api-specs).
        with self.world.lock:
            nic = self.world.find_nic(c.subscription, c.resource_group, c.args[0])
            sn = (
                None
                if nic is None
                else self.world.find_subnet(nic.subscription, nic.resource_group, nic.vnet, nic.subnet)
            )
            if nic is None or sn is None:
                return _not_found("networkInterfaces", c.args[0])
            result = {"value": derive.effective_routes(self.world, sn, self._sources)}
        return self._start_lro(c, result, {"value": []})

    def _gateway_advertised(self, c: _Call) -> _Response:
        peer = c.req.query.get("peer")
        if not peer:
            return _arm_error(400, "MissingRequiredParameter", "The 'peer' query parameter is required.")
        with self.world.lock:
            gw = self.world.find_gateway(c.subscription, c.resource_group, c.args[0])
            if gw is None:
                return _not_found("virtualNetworkGateways", c.args[0])
            routes = derive.gateway_advertised(self.world, gw, peer, self._sources)
        if routes is None:
            return _arm_error(400, "InvalidBgpPeerIp", f"'{peer}' is not a BGP peer of gateway '{c.args[0]}'.")
        return self._start_lro(c, {"value": routes}, {"value": []})

    def _gateway_peers(self, c: _Call) -> _Response:
        with self.world.lock:
            gw = self.world.find_gateway(c.subscription, c.resource_group, c.args[0])
            if gw is None:
                return _not_found("virtualNetworkGateways", c.args[0])
            peers = derive.gateway_peers(self.world, gw, self._sources)
        peer = c.req.query.get("peer")
        if peer:
            peers = [p for p in peers if p["neighbor"] == peer]
        return self._start_lro(c, {"value": peers}, {"value": []})

    def _firewall_get(self, c: _Call) -> _Response:
        with self.world.lock:
            fw = self.world.find_firewall(c.subscription, c.resource_group, c.args[0])
            return _not_found("azureFirewalls", c.args[0]) if fw is None else _json(200, resources.firewall_json(fw))

    def _firewall_metrics(self, c: _Call) -> _Response:
        names = {n.strip().lower() for n in c.req.query.get("metricnames", "").split(",")}
        with self.world.lock:
            fw = self.world.find_firewall(c.subscription, c.resource_group, c.args[0])
            if fw is None:
                return _not_found("azureFirewalls", c.args[0])
            body = resources.firewall_metrics_json(fw, "firewallhealth" in names, time.time())
        return _json(200, body)

    def _route_table_get(self, c: _Call) -> _Response:
        with self.world.lock:
            rt = self.world.find_route_table(c.subscription, c.resource_group, c.args[0])
            if rt is None:
                return _not_found("routeTables", c.args[0])
            return _json(200, resources.route_table_json(self.world, rt))

    def _subnet_get(self, c: _Call) -> _Response:
        with self.world.lock:
            sn = self.world.find_subnet(c.subscription, c.resource_group, c.args[0], c.args[1])
            if sn is None:
                return _not_found("virtualNetworks/subnets", f"{c.args[0]}/{c.args[1]}")
            return _json(200, resources.subnet_json(sn))

    def _vnet_get(self, c: _Call) -> _Response:
        # The world has no VNet object: a VNet exists while one of its subnets does. ARM returns the
        # subnets inline (routeTable ids included), which is why one GET can replace a subnet.get each.
        with self.world.lock:
            subnets = [
                sn
                for sn in self.world.subnets
                if sn.subscription.lower() == c.subscription.lower()
                and sn.resource_group.lower() == c.resource_group.lower()
                and sn.vnet.lower() == c.args[0].lower()
            ]
            if not subnets:
                return _not_found("virtualNetworks", c.args[0])
            vnet = subnets[0].vnet
            prefixes = [ipaddress.IPv4Network(sn.address_prefix, strict=False) for sn in subnets]
            space = ipaddress.collapse_addresses(prefixes)
            return _json(
                200,
                {
                    "id": f"{resources.group_id(c.subscription, c.resource_group)}/virtualNetworks/{vnet}",
                    "name": vnet,
                    "type": "Microsoft.Network/virtualNetworks",
                    "location": self.location,
                    "properties": {
                        "provisioningState": "Succeeded",
                        "addressSpace": {"addressPrefixes": [str(n) for n in space]},
                        "subnets": [resources.subnet_json(sn) for sn in subnets],
                    },
                },
            )

    # ---- long-running operations -------------------------------------------------------------------

    def _op_urls(self, sub: str, op_id: str) -> tuple[str, str]:
        base = f"{self.base_url}/subscriptions/{sub}/providers/Microsoft.Network/locations/{self.location}"
        return (
            f"{base}/operations/{op_id}?api-version=2026-03-01",
            f"{base}/operationResults/{op_id}?api-version=2026-03-01",
        )

    def _start_lro(self, c: _Call, result: object, empty: object) -> _Response:
        f = c.fault
        op = _Operation(
            subscription=c.subscription,
            names=c.args,
            result=(
                empty
                if f is not None and f.kind is FaultKind.EMPTY_INSTANCES
                else f.payload
                if f is not None and f.kind is FaultKind.BODY
                else result
            ),
            failed=f if f is not None and f.kind is FaultKind.LRO_FAILED else None,
            malformed=f is not None and f.kind is FaultKind.MALFORMED,
            polls_left=self.lro_polls,
            ready_at=time.monotonic() + self.lro_seconds,
        )
        op_id = uuid.uuid4().hex
        with self._ops_lock:
            if len(self._ops) >= MAX_OPERATIONS:
                # A long-running demo must not grow without bound; clients finish polling in seconds.
                for stale in list(self._ops)[: MAX_OPERATIONS // 2]:
                    del self._ops[stale]
            self._ops[op_id] = op
        status_url, result_url = self._op_urls(c.subscription, op_id)
        # With Azure-AsyncOperation alone the client holds only the status body at the end, which is
        # not the result (notes §5): Microsoft's examples answer that way, so the emulator can too.
        style = self.lro_style_for(c.op, c.subscription)
        op.result_in_status = style == "status-properties"
        headers = {"Retry-After": self._retry_after(op)}
        if style in ("location", "both"):
            headers["Location"] = result_url
        if style in ("azure-async-operation", "both", "status-properties"):
            headers["Azure-AsyncOperation"] = status_url
        return _Response(202, b"", headers)

    def lro_style_for(self, op: str, subscription: str | None = None) -> str:
        """The style an operation answers in: the world's per-operation choice, the world's, or ours."""
        with self.world.lock:
            chosen = next(
                (
                    o.style
                    for o in self.world.lro_styles
                    if o.op == op and (o.subscription is None or (subscription or "").lower() == o.subscription.lower())
                ),
                None,
            )
            return chosen or self.world.lro_style or self.lro_style

    def _start_put(self, c: _Call, answer: object, done: Callable[[], None]) -> _Response:
        """A PUT the ARM way: 201 with the body in `Updating` and an Azure-AsyncOperation to poll.

        The world's provisioningState returns to Succeeded when the operation completes (the
        client's final GET of the resource then sees it); a client that never polls leaves it Updating.
        """
        op = _Operation(c.subscription, c.args, None, None, False, self.lro_polls,
                        time.monotonic() + self.lro_seconds, done)  # fmt: skip
        op_id = uuid.uuid4().hex
        with self._ops_lock:
            self._ops[op_id] = op
        status_url, _ = self._op_urls(c.subscription, op_id)
        return _json(201, answer, {"Azure-AsyncOperation": status_url, "Retry-After": self._retry_after(op)})

    def _retry_after(self, op: _Operation) -> str:
        # Only whole seconds: the SDK's initial-response parser crashes on "0.2" (notes §0.5).
        return str(max(0, math.ceil(op.ready_at - time.monotonic())))

    def _poll(self, req: _Request, sub: str, status_url: bool, op_id: str) -> _Response:
        with self._ops_lock:
            op = self._ops.get(op_id)
        names = op.names if op is not None else ()
        early = self._pre("lro.poll", req.method, sub, names, arm=True)
        if isinstance(early, _Response):
            return early
        if req.method != "GET":
            return _arm_error(405, "MethodNotAllowed", "Operation URLs are read with GET.")
        if op is None:
            return _arm_error(404, "OperationNotFound", f"Operation '{op_id}' was not found.")
        with self._ops_lock:
            ready = op.polls_left <= 0 and time.monotonic() >= op.ready_at
            if not ready:
                op.polls_left -= 1
            on_done, op.on_done = (op.on_done, None) if ready else (None, op.on_done)
        if on_done is not None:
            with self.world.lock:
                on_done()
        retry = {"Retry-After": self._retry_after(op)}
        if status_url:
            if not ready:
                return _json(200, {"status": "InProgress"}, retry)
            if op.failed is not None:
                err = {"code": op.failed.code, "message": op.failed.message}
                return _json(200, {"status": "Failed", "error": err})
            if op.result_in_status:
                return _json(200, {"status": "Succeeded", "properties": op.result})
            return _json(200, {"status": "Succeeded"})
        if not ready:
            return _Response(202, b"", {"Location": self._op_urls(sub, op_id)[1], **retry})
        if op.failed is not None:
            # Location-only polling: a failed operation answers its error (400 is not retried).
            return _arm_error(400, op.failed.code, op.failed.message)
        if op.malformed:
            return _Response(200, MALFORMED_BODY, {})
        return _json(200, op.result)

    # ---- emulated NVA agents -----------------------------------------------------------------------

    def _dispatch_agent(self, req: _Request, low: tuple[str, ...]) -> tuple[str, str | None, _Response]:
        # Error bodies follow the real agent (FastAPI): {"detail": ...}.
        if len(low) < 4 or low[2] != "v1" or (op := _AGENT_ROUTES.get(low[3:])) is None:
            return "unknown", None, _json(404, {"detail": "Not Found"})
        ip = req.segments[1]
        with self.world.lock:
            nva = self.world.find_nva(ip)
            token = nva.agent_token if nva is not None else None
        if nva is None:
            return op, None, _json(404, {"detail": f"no emulated NVA at {ip}"})
        wanted = "PUT" if op == "agent.intent" else "GET"
        if req.method != wanted:
            return op, None, _json(405, {"detail": "Method Not Allowed"})
        if op != "agent.health" and (not token or _bearer(req.headers) != token):
            detail = {"detail": "missing or wrong bearer token"}
            return op, None, _json(401, detail, {"WWW-Authenticate": "Bearer"})
        early = self._pre(op, req.method, None, (ip,), arm=False)
        if isinstance(early, _Response):
            return op, None, early
        resp = self._agent_call(op, req, ip)
        if early is not None and early.kind is FaultKind.MALFORMED and resp.status < 300:
            resp.body = MALFORMED_BODY
        return op, None, resp

    def _agent_call(self, op: str, req: _Request, ip: str) -> _Response:
        uptime = int((time.monotonic() - self._started) * 1000)
        if op == "agent.health":
            return _json(200, agent.health())
        if op == "agent.state":
            with self.world.lock:
                return _json(200, agent.state(self.world, self.world.nva(ip), uptime))
        try:
            intent = agent.parse_intent(req.json_body())
        except agent.IntentError as exc:
            return _json(422, {"detail": [{"loc": list(exc.loc), "msg": str(exc), "type": "value_error"}]})
        except ValueError as exc:  # not JSON at all
            return _json(422, {"detail": [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}]})
        with self._agent_lock, self.world.lock:
            try:
                applied = agent.apply_intent(self.world, self.world.nva(ip), intent, uptime)
            except agent.Refused as exc:  # 403 outside the NVA's policy, 409 conflict: the real agent's bodies
                return _json(exc.status, exc.body())
            if self.on_intent is not None:
                self.on_intent(ip)  # under the world lock: the agent's own change, seen as such
            return _json(200, applied)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _match(pattern: tuple[str, ...], segs: tuple[str, ...], low: tuple[str, ...]) -> tuple[str, ...] | None:
    if len(pattern) != len(low):
        return None
    args: list[str] = []
    for p, s, s_low in zip(pattern, segs, low, strict=True):
        if p == "*":
            args.append(s)
        elif p != s_low:
            return None
    return tuple(args)


# ---- HTTP plumbing -------------------------------------------------------------------------------------


class _TlsServer(ThreadingHTTPServer):
    """Thread per connection; the TLS handshake happens in that thread, not in the accept loop."""

    daemon_threads = True
    request_queue_size = 256  # a fleet benchmark opens hundreds of connections at once

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        ctx: ssl.SSLContext,
        emulator: ArmEmulator,
    ) -> None:
        super().__init__(address, handler)
        self.ctx = ctx
        self.emulator = emulator
        self._conns: set[ssl.SSLSocket] = set()
        self._workers: set[threading.Thread] = set()
        self._conns_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(_Handler_.timeout)
        # Headers and body are small separate TLS records; Nagle + delayed ACK would add ~40 ms to each.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._conns_lock:
            self._workers.add(threading.current_thread())
        try:
            try:
                conn = self.ctx.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            with self._conns_lock:
                self._conns.add(conn)
            try:
                self.RequestHandlerClass(conn, client_address, cast(Any, self))
            finally:
                with self._conns_lock:
                    self._conns.discard(conn)
                conn.close()
        finally:
            with self._conns_lock:
                self._workers.discard(threading.current_thread())

    def close_connections(self) -> None:
        """Wake every keep-alive connection so its thread ends, then wait for them (bounded)."""
        with self._conns_lock:
            conns, workers = list(self._conns), list(self._workers)
        for conn in conns:
            # socket.socket.shutdown, not SSLSocket.shutdown: that one unwraps and races the reader.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        for t in workers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response are normal (shutdown, cancelled tasks); anything else is a bug.
        log.debug("connection error from %s", client_address, exc_info=True)


class _Handler_(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ArmEmulator/1.0"
    timeout = 120  # an idle keep-alive connection releases its thread after this
    server: _TlsServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        segments = tuple(unquote(s) for s in split.path.split("/") if s)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = _Request(self.command, split.path, segments, query, headers, body)
        resp = self.server.emulator.handle(req)
        headers = {
            "Date": self.date_time_string(),
            "Server": self.server_version,
            "Content-Length": str(len(resp.body)),
            "x-ms-request-id": str(uuid.uuid4()),
        }
        if resp.body:
            headers["Content-Type"] = "application/json; charset=utf-8"
        headers.update(resp.headers)
        head = f"{self.protocol_version} {resp.status} {_reason(resp.status)}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        # One write for status, headers and body: separate small TLS records would meet Nagle.
        payload = head.encode("latin-1") + b"\r\n" + (resp.body if self.command != "HEAD" else b"")
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
