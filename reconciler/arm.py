"""ARM adapter: reads (and the opt-in writes) through azure-mgmt-network's async client.

Owns client construction (one aiohttp session that never reads the environment, and the
pipeline's policies), the request slots (two lanes: the critical path first), per-subscription
pacing and the translation of ARM answers and errors into `observed` values: 404 -> None
(absent), any other failure -> Unknown.
Reads go through the SDK's pipeline (auth, retries, pacing) but come back as raw JSON, which
`arm_shapes` checks and translates; a body of the wrong shape is Unknown, never an exception.
Must not judge drift. Only this module and the other adapters import azure.*.

Cost per healthy target (what `bench/fleet.py` measures): hub, peer list, firewall and its
FirewallHealth metric, one GET per VNet, one GET per distinct route table, the gateway itself for a
VPN gateway, and two requests per route query (POST, then one GET of its Location once the
Retry-After has passed) -- 15 for a hub with two NVA peers and one ExpressRoute gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy, RequestIdPolicy, UserAgentPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.polling.base_polling import LocationPolling, StatusCheckPolling
from azure.core.rest import HttpRequest
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.policies import AsyncARMChallengeAuthenticationPolicy
from azure.mgmt.core.polling.arm_polling import AzureAsyncOperationPolling, BodyContentPolling
from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling
from azure.mgmt.network import __version__ as NETWORK_SDK_VERSION
from azure.mgmt.network.aio import NetworkManagementClient
from azure.mgmt.network.models import BgpConnection

from reconciler import arm_shapes
from reconciler.arm_ids import network_id
from reconciler.desired import GatewayType, SubnetInvariant, Target
from reconciler.errors import PermanentError, TransientError, first_line
from reconciler.observed import (
    Connection,
    EffectiveRoute,
    Firewall,
    FirewallHealth,
    Gateway,
    GatewayConfig,
    Hub,
    InstanceRoutes,
    Observation,
    Route,
    RouteEntry,
    SubnetRouting,
    Unknown,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_PUBLIC_ARM = "https://management.azure.com"
# The token scope azure-mgmt-network asks for by default (its configuration's credential_scopes).
_ARM_SCOPE = "https://management.azure.com/.default"
# The api-version azure-mgmt-network 33.1.0 sends on every call (notes §0.1); the raw GETs use the
# same one, and a unit test fails when an SDK upgrade moves it.
NETWORK_API_VERSION = "2026-03-01"
# Azure Monitor Metrics - List, stable (azure-rest-api-specs monitor/.../Microsoft.Insights/stable/2023-10-01).
METRICS_API_VERSION = "2023-10-01"
# The RBAC action behind each raw GET (`_get`), by the operation name `read` reports it under; the
# SDK calls are mapped in tests/unit/test_role.py, which holds infra/reconciler-role.json to both.
RAW_READ_ACTIONS: dict[str, str] = {
    "hub.get": "Microsoft.Network/virtualHubs/read",
    "bgp.list": "Microsoft.Network/virtualHubs/bgpConnections/read",
    "firewall.get": "Microsoft.Network/azureFirewalls/read",
    "firewall.health": "Microsoft.Insights/metrics/read",  # Azure Monitor Metrics - List
    "gateway.get": "Microsoft.Network/virtualNetworkGateways/read",
    "vnet.get": "Microsoft.Network/virtualNetworks/read",
    "routetable.get": "Microsoft.Network/routeTables/read",
}
# Top-level keys of a routes answer already logged as not-an-instance (each cut to 60 characters):
# bounded, because the keys come from the answer and a worker lives for days.
IGNORED_KEYS_REMEMBERED = 100
_IGNORED_KEYS_LOGGED: set[str] = set()


class _Queueing:
    """Time one ARM operation has spent queued behind our own pacing and concurrency bound."""

    def __init__(self) -> None:
        self.total = 0.0
        self.since: float | None = None  # set while a request of this operation waits its turn

    def now_queued(self, now: float) -> float:
        return self.total + (now - self.since if self.since is not None else 0.0)


# The current operation's queueing clock, seen by its HTTP attempts in the pipeline (see Arm._call).
_QUEUEING: ContextVar[_Queueing | None] = ContextVar("arm_queueing", default=None)


class Lane(enum.Enum):
    """Which queue an ARM request waits in for a slot (RequestSlots)."""

    CRITICAL = "critical"
    """On a target's longest chain: the route queries (POST, then the GET of their result once the
    Retry-After has passed) and the peer list the learned-routes queries wait for. Each one that waits
    for a slot delays the whole target by as much; a plain GET waiting instead costs nothing while
    the route queries are still running at ARM."""
    PLAIN = "plain"
    """Everything else: hub, firewall, metric, VNet, route table and gateway GETs; writes."""


# The lane of the current operation's HTTP attempts (set per operation by Arm._call).
_LANE: ContextVar[Lane] = ContextVar("arm_lane", default=Lane.PLAIN)
# Under contention the critical lane takes at most this many slots in a row while plain requests
# wait; then one plain request goes. Plain requests so keep at least 1/17 of the slots and cannot
# starve. The zero-CPU schedule of a 100-hub pass at 64 slots (bench/floor.py) ends at 1.95 s first
# come first served, 1.60 s with a run of 4, 1.50 s with 16, and no sooner with strict priority.
CRITICAL_RUN = 16


class SlotOrder:
    """Who gets the next free request slot: the pure part of RequestSlots (no I/O, no event loop).

    A request that arrives while a slot is free and nobody waits takes it at once; otherwise it
    waits in its lane, and each released slot goes to the head of a lane: critical first, but never
    more than `critical_run` times in a row while a plain request waits. Each lane is FIFO.
    """

    def __init__(self, slots: int, critical_run: int = CRITICAL_RUN) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.free = slots
        self.critical_run = critical_run
        self.waiting = {Lane.CRITICAL: 0, Lane.PLAIN: 0}
        self._run = 0  # critical grants in a row while a plain request was waiting

    def arrive(self, lane: Lane) -> bool:
        """True: the request has a slot now; False: it waits in `lane` until `release` names it."""
        if self.free > 0 and not any(self.waiting.values()):
            self.free -= 1
            return True
        self.waiting[lane] += 1
        return False

    def withdraw(self, lane: Lane) -> None:
        """A waiter of `lane` gave up (cancelled) before it was granted a slot."""
        self.waiting[lane] -= 1

    def release(self) -> Lane | None:
        """A slot is free again: the lane whose oldest waiter now holds it, or None (slot stays free)."""
        critical, plain = self.waiting[Lane.CRITICAL], self.waiting[Lane.PLAIN]
        if not critical and not plain:
            self.free += 1
            return None
        if critical and (not plain or self._run < self.critical_run):
            self._run = self._run + 1 if plain else 0
            lane = Lane.CRITICAL
        else:
            self._run = 0
            lane = Lane.PLAIN
        self.waiting[lane] -= 1
        return lane


class RequestSlots:
    """The bound on ARM requests on the wire, with two lanes (SlotOrder decides; this one waits)."""

    def __init__(self, slots: int, critical_run: int = CRITICAL_RUN) -> None:
        self.order = SlotOrder(slots, critical_run)
        self._waiters: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in Lane}

    @contextlib.asynccontextmanager
    async def slot(self, lane: Lane) -> AsyncIterator[None]:
        if not self.order.arrive(lane):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters[lane].append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted, then cancelled before it ran: pass the slot on
                else:
                    self._waiters[lane].remove(waiter)
                    self.order.withdraw(lane)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        lane = self.order.release()
        if lane is not None:
            self._waiters[lane].popleft().set_result(None)


@dataclass(frozen=True)
class ArmOptions:
    """How to reach ARM and how hard to push it."""

    endpoint: str | None = None
    """Base URL; None means public Azure (https://management.azure.com). The emulator sets its own."""
    ca_bundle: str | None = None
    """CA file to trust (the emulator's test CA); None uses the system store."""
    poll_interval: float = 1.0
    """LRO fallback poll delay in seconds when ARM sends no Retry-After (SDK default is 30 s)."""
    concurrency: int = 96
    """Most ARM HTTP requests on the wire at once, across all subscriptions. An LRO waiting out its
    Retry-After holds no slot, so this bounds sockets, not operations. ARM documents rate limits
    (token buckets per subscription, tenant and principal), not a limit on requests in flight
    (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling); the
    bound is ours. 96 (issue #18): a 100-hub pass sends 500 critical-path requests (peer lists,
    route-query POSTs) before its last POST leaves; at 64 slots that took ~8 rounds of 50 ms
    (zero-CPU floor 1.50 s, 1.30x the bound), at 96 about 5 (1.40 s). Measured on 2 cores: 96 and
    128 slots both ended the pass ~0.05 s sooner than 64; 128 opens 32 more connections for no gain."""
    reads_per_second: float = 25.0
    """Client-side pacing per subscription: ARM refills its read bucket at 25/s. Every HTTP attempt
    (first try, SDK retry, LRO poll, next page) spends one token, as it does at ARM."""
    read_burst: int = 240
    """Client-side burst per subscription. ARM's read bucket holds 250; the 10 held back absorb
    requests that reach ARM in a different order or bunched closer than we sent them."""
    writes_per_second: float = 10.0
    """Write pacing per subscription (PUT, PATCH, DELETE): ARM refills writes at 10/s."""
    write_burst: int = 190
    """Write burst per subscription; ARM's write bucket holds 200."""
    read_timeout: float = 60.0
    """A read (including its LRO polling and SDK retries) that takes longer becomes Unknown. Time spent
    waiting for our own pacing tokens does not count: a big fleet must never blind itself."""
    retry_total: int = 4
    """SDK retries per request (429 with Retry-After, 5xx, connection errors)."""
    retry_backoff: float = 0.8
    """SDK exponential backoff factor when ARM sends no Retry-After (0, 1.6 s, 3.2 s, ... by default)."""
    proxy: str | None = None
    """Forward proxy for every ARM request (the ARS_HTTPS_PROXY setting, read once at start-up); None
    connects directly. The environment (HTTPS_PROXY, .netrc) is never consulted per request."""


# TLS connections the ARM pool opens at once (_Connector). Measured at the start of a 100-hub pass
# (emulator on the same 2 cores, bench/fleet.py's fleet): with every slot's handshake at once the
# first answer came 0.18-0.21 s in, opened 4 or 8 at a time 0.15 s, and the pass ended 0.015-0.03 s
# sooner (4 pairs of runs, 64 and 96 slots); 8 cost less CPU than 4.
OPENING_AT_ONCE = 8


class _Connector(aiohttp.TCPConnector):
    """aiohttp's TCP connector that opens at most `opening` connections at a time.

    A pass starts with every slot wanting a connection at once. Handshakes cost CPU on both ends,
    so opened all together each one finishes only when all do; opened a few at a time, each slot
    gets its connection as soon as its turn comes and the early ones are already at work.
    `_create_connection` is aiohttp's own seam for how a new connection is made (TCPConnector
    overrides BaseConnector's; aiohttp is pinned, and tests/unit/test_arm_connector.py fails if
    the seam moves).
    """

    def __init__(self, *, opening: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._opening = asyncio.Semaphore(opening)

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        async with self._opening:
            return await super()._create_connection(req, traces, timeout)


class StaticTokenCredential(AsyncTokenCredential):
    """A fixed bearer token, for the local ARM emulator only (never for Azure)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aexit__(self, *args: object) -> None:
        return None


class TokenBucket:
    """Client-side pacing so a big fleet waits its turn instead of collecting ARM 429s.

    The same arithmetic as ARM's per-subscription bucket: `burst` tokens, refilled at `rate`/s.
    Waiters are served in arrival order (the lock is FIFO), so no target starves.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
                self._last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


_WRITES = frozenset({"PUT", "PATCH", "DELETE"})


class _Pacing(AsyncHTTPPolicy[Any, Any]):
    """Sits after the SDK's retry policy, so it sees every HTTP attempt of one subscription's client.

    Each attempt spends a token of that subscription's read or write bucket (the split the emulator's
    Throttle and ARM use: the POST route queries count as reads) and holds a concurrency slot only
    while it is on the wire; the retry policy's Retry-After sleeps and LRO waits happen outside.
    """

    def __init__(self, arm: Arm, subscription: str) -> None:
        super().__init__()
        self._arm = arm
        self._reads = TokenBucket(arm.options.reads_per_second, arm.options.read_burst)
        self._writes = TokenBucket(arm.options.writes_per_second, arm.options.write_burst)

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        write = request.http_request.method.upper() in _WRITES
        queue = _QUEUEING.get()
        if queue is not None:
            queue.since = time.monotonic()
        await (self._writes if write else self._reads).take()
        async with self._arm.slots.slot(_LANE.get()):
            if queue is not None and queue.since is not None:
                queue.total += time.monotonic() - queue.since
                queue.since = None
            self._arm.requests += 1
            response = await self.next.send(request)
        if response.http_response.status_code == 429:
            self._arm.throttled += 1
        return response


class _RoutePolling(AsyncARMPolling):
    """Polling for the POST route queries that spends as few reads as ARM's async protocol allows.

    azure-core prefers Azure-AsyncOperation, which costs a status GET plus a final GET of Location,
    and it polls once immediately, which can only answer "still running". ARM's async-operation
    contract lets a client GET the Location URL instead (202 while running, 200 with the result when
    done), and asks it to wait Retry-After first: one GET per finished query instead of three.
    """

    def __init__(self, interval: float, endpoint: str) -> None:
        super().__init__(
            interval,
            lro_algorithms=[
                LocationPolling(),
                AzureAsyncOperationPolling(),  # an answer without Location (not ARM's, but safe)
                BodyContentPolling(),
                StatusCheckPolling(),
            ],
            path_format_arguments={"endpoint": endpoint},
        )

    async def _poll(self) -> None:
        if not self.finished():
            await self._delay()  # the 202's Retry-After
        await super()._poll()

    def _parse_resource(self, pipeline_response: Any) -> Any:
        """The final answer's JSON as sent, not the SDK's model of it: arm_shapes judges it (issue #11).

        The SDK's deserializer rejects or reshapes odd bodies with errors that say nothing about the
        read, and a status body would pass as a route map; raw JSON also spares the model layer's CPU.
        """
        body = pipeline_response.http_response.body()
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise arm_shapes.Malformed(f"not JSON: {first_line(exc)}") from exc


class Arm:
    """One shared set of ARM clients (one per subscription), built once per worker."""

    def __init__(self, credential: AsyncTokenCredential, options: ArmOptions) -> None:
        self._credential = credential
        self.options = options
        self._clients: dict[str, NetworkManagementClient] = {}
        self._session: aiohttp.ClientSession | None = None
        self.slots = RequestSlots(options.concurrency)
        self.requests = 0  # HTTP requests sent to ARM, retries and LRO polls included (a benchmark figure)
        self.throttled = 0  # of which ARM answered 429 (each one a Retry-After wait)

    def _route_polling(self) -> _RoutePolling:
        return _RoutePolling(self.options.poll_interval, self.options.endpoint or _PUBLIC_ARM)

    def client(self, subscription: str) -> NetworkManagementClient:
        c = self._clients.get(subscription)
        if c is None:
            kwargs: dict[str, Any] = {"polling_interval": self.options.poll_interval}
            if self.options.endpoint:
                kwargs["base_url"] = self.options.endpoint
            c = NetworkManagementClient(
                self._credential,
                subscription,
                transport=AioHttpTransport(session=self._http(), session_owner=False),
                policies=self._policies(subscription),
                **kwargs,
            )
            self._clients[subscription] = c
        return c

    def _policies(self, subscription: str) -> list[Any]:
        """The pipeline every ARM request runs through: only the policies a read or a fix needs.

        What each azure-core policy does: azure-sdk-for-python sdk/core/azure-core/
        CLIENT_LIBRARY_DEVELOPER.md, "Available Policies". Kept, in the SDK's own order:
        - RequestIdPolicy: x-ms-client-request-id on every request; LRO polling reads it back from the
          first response's request and re-sends it on each poll (azure-core base_polling
          `_get_request_id`), and it is the id ARM support correlates a call by.
        - UserAgentPolicy with the SDK's moniker: ARM sees the same User-Agent as from the stock client.
        - AsyncRetryPolicy: 429 with Retry-After, 5xx and connection errors (retry_total, retry_backoff).
        - AsyncARMChallengeAuthenticationPolicy: the bearer token, refreshed when near expiry, and
          ARM's claims challenges (CAE); the SDK's default authentication policy.
        - _Pacing, after retry: each attempt spends a pacing token and holds a request slot.
        Left out (each costs CPU on every request): HeadersPolicy (generated operations set their own
        headers, If-Match included), ProxyPolicy (the proxy is the session's, ArmOptions.proxy),
        ContentDecodePolicy (a second JSON parse of every body: our reads parse it once, arm_shapes;
        the SDK's models of the two fixes decode from the response text without it),
        AsyncARMAutoResourceProviderRegistrationPolicy (registers a provider on 409; the reader
        role cannot, and Microsoft.Network is registered where its resources exist), the redirect
        policy and SensitiveHeaderCleanupPolicy (ARM does not redirect these calls; a 3xx is an error,
        so a read of it is Unknown), CustomHookPolicy (no hooks), and the logging and tracing policies
        (NetworkTraceLoggingPolicy is off unless asked per call; HttpLoggingPolicy logs each request
        at INFO, which the app silences; DistributedTracingPolicy would add a span per request).
        """
        return [
            RequestIdPolicy(),
            UserAgentPolicy(sdk_moniker=f"mgmt-network/{NETWORK_SDK_VERSION}"),
            AsyncRetryPolicy(retry_total=self.options.retry_total, retry_backoff_factor=self.options.retry_backoff),
            AsyncARMChallengeAuthenticationPolicy(self._credential, _ARM_SCOPE),
            _Pacing(self, subscription),
        ]

    def _http(self) -> aiohttp.ClientSession:
        """One connection pool for every subscription's client, with one TLS context.

        Not `connection_verify=<CA file>`: azure-core's aiohttp transport then builds a new SSL
        context per request, which aiohttp cannot pool, so every request paid a TCP + TLS handshake
        and the idle connections piled up (measured: 1.7 GB RSS and 2.3x the lower bound at 500 hubs).

        trust_env=False: with it aiohttp looks up the proxy in the environment and the host in
        ~/.netrc on every request, each in a thread-pool hop (issue #18: 26% of a 100-hub pass's CPU).
        The proxy, if any, is ArmOptions.proxy, read once at start-up. No cookie jar: ARM sets none.
        """
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = True
            if self.options.ca_bundle:
                ssl_ctx = ssl.create_default_context(cafile=self.options.ca_bundle)
            connector = _Connector(opening=OPENING_AT_ONCE, ssl=ssl_ctx, limit=self.options.concurrency)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, proxy=self.options.proxy, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._credential.close()

    async def _call(self, fn: Callable[[], Awaitable[T]], lane: Lane = Lane.PLAIN) -> T:
        """Run one ARM operation with `read_timeout`, not counting time queued behind our own pacing.

        Pacing and the concurrency bound live in the pipeline (_Pacing), per HTTP attempt; it keeps
        this operation's queueing clock and reads its lane, which the operation's task sees through
        context variables. A plain wait_for would turn a long queue (many hubs in one subscription)
        into Unknowns.
        """
        queue = _Queueing()
        reset, reset_lane = _QUEUEING.set(queue), _LANE.set(lane)
        try:
            task = asyncio.ensure_future(fn())  # the task copies the context: `queue` and `lane`
        finally:
            _QUEUEING.reset(reset)
            _LANE.reset(reset_lane)
        started = time.monotonic()
        try:
            while not task.done():
                now = time.monotonic()
                remaining = self.options.read_timeout - (now - started - queue.now_queued(now))
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait({task}, timeout=remaining)
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def read(
        self,
        subscription: str,
        operation: str,
        resource: str,
        fn: Callable[[], Awaitable[T]],
        lane: Lane = Lane.PLAIN,
    ) -> T | Unknown | None:
        """Run one read: its value, None when ARM says 404, or Unknown for any other failure."""
        try:
            return await self._call(fn, lane)
        except ResourceNotFoundError:
            return None
        except TimeoutError:
            return Unknown(operation, resource, f"timed out after {self.options.read_timeout:.0f} s")
        except HttpResponseError as exc:
            return Unknown(operation, resource, _http_reason(exc))
        except arm_shapes.Malformed as exc:
            return Unknown(operation, resource, f"malformed answer: {first_line(exc)}")
        except (AzureError, OSError, ValueError, KeyError, TypeError) as exc:
            # ValueError/KeyError/TypeError: a malformed body the SDK could not deserialize.
            return Unknown(operation, resource, f"{type(exc).__name__}: {first_line(exc)}")
        except Exception as exc:  # the adapter boundary: no answer may crash the target
            log.warning("%s %s: unexpected %s", operation, resource, type(exc).__name__, exc_info=True)
            return Unknown(operation, resource, f"{type(exc).__name__}: {first_line(exc)}")

    # ---- reads -------------------------------------------------------------------------------

    async def observe(self, target: Target) -> Observation:
        """Read everything ARM knows about one target, concurrently."""
        sub, rg, rs = target.subscription_id, target.resource_group, target.route_server

        async def hub() -> Hub:
            return arm_shapes.hub(await self._get(sub, _network_path(sub, rg, "virtualHubs", rs)))

        async def connections() -> tuple[Connection, ...]:
            out: list[Connection] = []
            url: str | None = _network_path(sub, rg, "virtualHubs", rs, "bgpConnections")
            seen: set[str] = set()
            while url is not None and url not in seen:  # a nextLink that repeats would loop forever
                seen.add(url)
                page, url = arm_shapes.connection_page(await self._get(sub, url))
                out.extend(page)
            return tuple(out)

        # Everything independent starts at once; learned routes follow once the peer list is known.
        hub_t = asyncio.create_task(self.read(sub, "hub.get", rs, hub))
        fw_t = asyncio.create_task(self._firewall(target))
        gw_ts = [
            asyncio.create_task(self._gateway(target, g.name, g.resource_group or rg, g.type,
                                              [str(p) for p in g.onprem_peers]))
            for g in target.gateways
        ]  # fmt: skip
        sn_t = asyncio.create_task(self._subnets(target))
        nic_t = asyncio.create_task(self._probe_nics(target))
        conns_v = await self.read(sub, "bgp.list", rs, connections, Lane.CRITICAL)  # gates the route queries

        learned: dict[str, InstanceRoutes | Unknown] = {}
        if isinstance(conns_v, tuple):
            declared = {str(p.ip) for p in target.peers} | {p.name for p in target.peers}
            # Only declared peers' routes can change a verdict; undeclared ones are PEER_UNEXPECTED anyway.
            wanted = [cn for cn in conns_v if cn.name in declared or cn.peer_ip in declared]
            results = await asyncio.gather(*(self._learned(sub, rg, rs, cn.name) for cn in wanted))
            learned = {cn.name: r for cn, r in zip(wanted, results, strict=True)}
        elif conns_v is None:
            conns_v = ()

        fw_obj, fw_ip, fw_health = await fw_t
        gateways = [await t for t in gw_ts]
        subnets = await sn_t
        return Observation(
            target=target.name,
            hub=await hub_t,
            connections=conns_v,
            learned=learned,
            gateways={g.name: v for g, v in zip(target.gateways, gateways, strict=True)},
            firewall=fw_obj,
            firewall_ip=fw_ip,
            firewall_health=fw_health,
            subnets=subnets,
            nics=await nic_t,
        )

    async def _get(self, subscription: str, url: str, api_version: str | None = NETWORK_API_VERSION) -> Any:
        """One raw GET through the subscription's pipeline (auth, retries, pacing): the JSON body.

        Raw JSON, not the SDK's models: the models pass wrong-typed JSON through and fail later, far
        from the read (issue #11); arm_shapes checks the body once, here at the edge.
        """
        if api_version is not None and "api-version=" not in url:
            url += ("&" if "?" in url else "?") + f"api-version={api_version}"
        response = await self.client(subscription).send_request(HttpRequest("GET", url))
        if response.status_code == 404:
            raise ResourceNotFoundError(response=response, error_format=ARMErrorFormat)
        if response.status_code == 401:
            raise ClientAuthenticationError(response=response, error_format=ARMErrorFormat)
        if response.status_code >= 300:
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        try:
            return response.json()
        except ValueError as exc:
            raise arm_shapes.Malformed(f"not JSON: {first_line(exc)}") from exc

    async def get_json(self, subscription: str, path: str) -> Any:
        """A raw GET of a path outside Microsoft.Network (the Activity Log, reconciler.activity_log),
        through the same pipeline, concurrency bound and timeout; the path carries its api-version."""
        return await self._call(lambda: self._get(subscription, path, api_version=None))

    async def _lro(self, begin: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run one route query to its end and return the final answer's raw JSON (see _RoutePolling).

        With Location the final answer is the result; with Azure-AsyncOperation only it is the status
        resource, which arm_shapes refuses as a result.
        """
        poller = await begin(*args, polling=self._route_polling(), **kwargs)
        return await poller.result()

    async def _probe_nics(self, target: Target) -> dict[str, tuple[EffectiveRoute, ...] | Unknown | None]:
        """Each probe NIC's real effective route table (a long-running POST, like the route queries)."""
        sub = target.subscription_id
        c = self.client(sub)

        def read_nic(rg: str, name: str) -> Coroutine[Any, Any, Any]:
            async def table() -> tuple[EffectiveRoute, ...]:
                raw = await self._lro(c.network_interfaces.begin_get_effective_route_table, rg, name)
                return arm_shapes.effective_routes(raw)

            return self.read(sub, "nic.routes", name, table, Lane.CRITICAL)

        probes = target.probes
        values = await asyncio.gather(*(read_nic(p.resource_group or target.resource_group, p.nic) for p in probes))
        return {p.nic: v for p, v in zip(probes, values, strict=True)}

    async def _learned(self, sub: str, rg: str, rs: str, conn: str) -> InstanceRoutes | Unknown:
        c = self.client(sub)

        async def learned() -> InstanceRoutes:
            raw = await self._lro(c.virtual_hub_bgp_connections.begin_list_learned_routes, rg, rs, conn)
            parsed = arm_shapes.instance_routes(raw, "learnedRoutes")
            for key in (k[:60] for k in parsed.ignored):
                if key not in _IGNORED_KEYS_LOGGED:
                    if len(_IGNORED_KEYS_LOGGED) >= IGNORED_KEYS_REMEMBERED:
                        _IGNORED_KEYS_LOGGED.clear()  # bounded: a key may be logged again after 100 others
                    _IGNORED_KEYS_LOGGED.add(key)
                    log.info("learnedRoutes: ignoring top-level key %r (not a Route Server instance)", key)
            return parsed.routes

        value = await self.read(sub, "routes.learned", conn, learned, Lane.CRITICAL)
        if value is None:
            return Unknown("routes.learned", conn, "connection disappeared while reading")
        if not isinstance(value, Unknown) and not value:
            # An empty instance map is what ARS returns during maintenance: unknown, not "no routes".
            return Unknown("routes.learned", conn, "empty per-instance map (Route Server maintenance?)")
        return value

    async def _firewall(
        self, target: Target
    ) -> tuple[Firewall | Unknown | None, str | None, FirewallHealth | Unknown | None]:
        fixed = target.firewall.private_ip
        if target.firewall.name is None:
            return None, str(fixed) if fixed else None, None
        name = target.firewall.name
        sub = target.subscription_id
        path = _network_path(sub, target.firewall.resource_group or target.resource_group, "azureFirewalls", name)

        async def get() -> Firewall:
            return arm_shapes.firewall(await self._get(sub, path), name)

        async def health() -> FirewallHealth | None:
            # Azure Monitor Metrics - List, split by the Status and Reason dimensions (Azure Firewall
            # metrics docs); api-version 2023-10-01 is the stable Microsoft.Insights metrics API. The REST
            # reference describes `timespan` as start/end; a bare ISO 8601 duration ("the last 15 min")
            # is what Microsoft's own metrics query clients send for a duration (azure-core TimeInterval.
            # toIso8601Format, used by azure-monitor-query); our emulator does not check the parameter.
            url = (f"{path}/providers/Microsoft.Insights/metrics?api-version={METRICS_API_VERSION}"
                   "&metricnames=FirewallHealth&aggregation=Average&interval=PT1M&timespan=PT15M"
                   "&$filter=Status eq '*' and Reason eq '*'")  # fmt: skip
            return arm_shapes.firewall_health(await self._get(sub, url, api_version=None))

        fw_v, health_v = await asyncio.gather(
            self.read(sub, "firewall.get", name, get), self.read(sub, "firewall.health", name, health)
        )
        ip = fw_v.private_ip if isinstance(fw_v, Firewall) else None
        return fw_v, ip, health_v

    async def _gateway(
        self, target: Target, name: str, rg: str, kind: GatewayType, onprem: list[str]
    ) -> Gateway | Unknown | None:
        sub = target.subscription_id
        c = self.client(sub)

        async def learned() -> tuple[Route, ...]:
            raw = await self._lro(c.virtual_network_gateways.begin_get_learned_routes, rg, name)
            return arm_shapes.gateway_routes(raw, "getLearnedRoutes")

        def advertised(peer: str) -> Callable[[], Awaitable[tuple[Route, ...]]]:
            async def run() -> tuple[Route, ...]:
                raw = await self._lro(c.virtual_network_gateways.begin_get_advertised_routes, rg, name, peer=peer)
                return arm_shapes.gateway_routes(raw, "getAdvertisedRoutes")

            return run

        async def config() -> GatewayConfig:
            return arm_shapes.gateway(await self._get(sub, _network_path(sub, rg, "virtualNetworkGateways", name)))

        # Only a VPN gateway's own settings matter here (it must be active-active with Route Server).
        config_t = (
            asyncio.create_task(self.read(sub, "gateway.get", name, config)) if kind == GatewayType.VPN else None
        )
        learned_v, *adv = await asyncio.gather(
            self.read(sub, "gateway.learned", name, learned, Lane.CRITICAL),
            *(self.read(sub, "gateway.advertised", f"{name}:{p}", advertised(p), Lane.CRITICAL) for p in onprem),
        )
        config_v = await config_t if config_t is not None else None
        if learned_v is None:
            return None  # 404 on the gateway: it is gone
        advertised_map: dict[str, tuple[Route, ...] | Unknown] = {}
        for p, v in zip(onprem, adv, strict=True):
            advertised_map[p] = Unknown("gateway.advertised", f"{name}:{p}", "gateway not found") if v is None else v
        if config_v is None and config_t is not None:
            config_v = Unknown("gateway.get", name, "gateway not found")
        return Gateway(name=name, learned=learned_v, advertised=advertised_map, config=config_v)

    async def _subnets(self, target: Target) -> dict[str, SubnetRouting | Unknown | None]:
        """The declared subnets' routing: one GET per VNet, then one GET per distinct route table.

        A VNet GET carries every subnet with its routeTable id, so N subnets in one VNet cost one
        read instead of N; subnets sharing a route table share its read.
        """
        sub = target.subscription_id

        def vnet_read(rg: str, name: str) -> Coroutine[Any, Any, Any]:
            async def get() -> dict[str, str | None]:
                body = await self._get(sub, _network_path(sub, rg, "virtualNetworks", name))
                return arm_shapes.vnet_route_tables(body)

            return self.read(sub, "vnet.get", name, get)

        def table_read(rg: str, name: str) -> Coroutine[Any, Any, Any]:
            async def get() -> tuple[tuple[RouteEntry, ...], bool | None]:
                return arm_shapes.route_table(await self._get(sub, _network_path(sub, rg, "routeTables", name)))

            return self.read(sub, "routetable.get", name, get)

        def vnet_key(inv: SubnetInvariant) -> tuple[str, str]:
            return ((inv.resource_group or target.resource_group).lower(), inv.vnet.lower())

        vnets: dict[tuple[str, str], asyncio.Task[Any]] = {}
        for inv in target.subnets:
            if vnet_key(inv) not in vnets:
                rg = inv.resource_group or target.resource_group
                vnets[vnet_key(inv)] = asyncio.create_task(vnet_read(rg, inv.vnet))

        tables: dict[str, asyncio.Task[Any]] = {}
        found: dict[str, SubnetRouting | Unknown | str | None] = {}  # str: the route table id to read
        for inv in target.subnets:
            key = f"{inv.vnet}:{inv.subnet}"
            vnet = await vnets[vnet_key(inv)]
            if vnet is None or isinstance(vnet, Unknown):
                found[key] = vnet  # a VNet that is gone takes its subnets with it
                continue
            if inv.subnet.lower() not in vnet:
                found[key] = None
                continue
            rt_id = vnet[inv.subnet.lower()]
            if not rt_id:
                found[key] = SubnetRouting(inv.vnet, inv.subnet, None, (), None)
            else:
                if rt_id.lower() not in tables:
                    tables[rt_id.lower()] = asyncio.create_task(table_read(*_rg_and_name(rt_id)))
                found[key] = str(rt_id)

        out: dict[str, SubnetRouting | Unknown | None] = {}
        for inv in target.subnets:
            key = f"{inv.vnet}:{inv.subnet}"
            value = found[key]
            if isinstance(value, str):
                out[key] = _subnet_routing(inv.vnet, inv.subnet, value, await tables[value.lower()])
            else:
                out[key] = value
        return out

    # ---- opt-in writes (Azure-side fixes) ------------------------------------------------------

    async def put_connection(self, target: Target, name: str, peer_ip: str, peer_asn: int) -> None:
        """Create or rewrite a bgpConnection. Raises TransientError on 409 AnotherOperationInProgress."""
        c = self.client(target.subscription_id)

        async def put() -> None:
            body = BgpConnection({"name": name, "properties": {"peerIp": peer_ip, "peerAsn": peer_asn}})
            poller = await c.virtual_hub_bgp_connection.begin_create_or_update(
                target.resource_group, target.route_server, name, body
            )
            await poller.result()

        await self._write(target.subscription_id, f"bgp.put {name}", put)

    async def enable_branch_to_branch(self, target: Target) -> None:
        """GET the hub, set allowBranchToBranchTraffic, PUT the whole hub back (there is no PATCH for it).

        A PUT replaces the resource, so the body is everything the GET returned. `If-Match` carries the
        ETag read: if someone changed the hub in between, ARM answers 412 and nothing is overwritten;
        that is "deferred", re-read and tried on the next pass.
        """
        c = self.client(target.subscription_id)

        async def put() -> None:
            hub = await c.virtual_hubs.get(target.resource_group, target.route_server)
            hub.allow_branch_to_branch_traffic = True
            headers = {"If-Match": hub.etag} if hub.etag else {}
            poller = await c.virtual_hubs.begin_create_or_update(
                target.resource_group, target.route_server, hub, headers=headers
            )
            await poller.result()

        await self._write(target.subscription_id, "hub.put", put)

    async def _write(self, subscription: str, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await self._call(fn)
        except ClientAuthenticationError as exc:
            raise PermanentError(f"{what}: not authorised: {first_line(exc)}") from exc
        except HttpResponseError as exc:
            code = _error_code(exc)
            if exc.status_code == 412:
                raise TransientError(f"{what}: changed since it was read (412); re-read next pass") from exc
            # Platform rule 9: a collision is "try later", never "failed".
            if exc.status_code == 409 or code == "AnotherOperationInProgress":
                raise TransientError(
                    f"{what}: another operation is in progress ({code or 409}); retry next pass"
                ) from exc
            if exc.status_code in (429, 500, 502, 503, 504):
                raise TransientError(f"{what}: {_http_reason(exc)}") from exc
            raise PermanentError(f"{what}: {_http_reason(exc)}") from exc
        except TimeoutError as exc:
            raise TransientError(f"{what}: timed out") from exc
        except AzureError as exc:
            raise TransientError(f"{what}: {first_line(exc)}") from exc


def _subnet_routing(vnet: str, subnet: str, rt_id: str, rt: Any) -> SubnetRouting | Unknown:
    rt_name = _rg_and_name(rt_id)[1]
    if rt is None:
        return SubnetRouting(vnet, subnet, None, (), None)  # the subnet points at a table that is gone
    if isinstance(rt, Unknown):
        return rt
    routes, disable_bgp = rt
    return SubnetRouting(vnet, subnet, rt_name, routes, disable_bgp)


def _network_path(subscription: str, resource_group: str, kind: str, name: str, *rest: str) -> str:
    """An ARM path below Microsoft.Network, each segment URL-quoted (names may hold spaces)."""
    return network_id(subscription, resource_group, kind, name, *rest, segment=lambda p: quote(p, safe=""))


def _s(value: Any) -> str:
    """Enum-safe string: SDK enums print as `Enum.NAME` under str(), so take .value (notes §0.4)."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _rg_and_name(resource_id: str) -> tuple[str, str]:
    parts = resource_id.strip("/").split("/")
    lower = [p.lower() for p in parts]
    rg = parts[lower.index("resourcegroups") + 1] if "resourcegroups" in lower else ""
    return rg, parts[-1]


def _error_code(exc: HttpResponseError) -> str:
    err = getattr(exc, "error", None)
    return str(getattr(err, "code", "") or "")


def _http_reason(exc: HttpResponseError) -> str:
    code = _error_code(exc)
    return (f"HTTP {exc.status_code}" + (f" {code}" if code else "") + f": {first_line(exc)}")[:300]


