"""The composition root: builds every adapter from `Settings`, once per worker.

Owns which concrete client backs each port of `service.Services`. Credentials are chosen by
settings (static token for the local emulator, DefaultAzureCredential otherwise), not by
checking where we run. It must not decide anything about a pass (that is `service`'s).
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import desired, notify, storage
from reconciler.agent_client import AgentClient
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.desired import DesiredState, Peer, Target
from reconciler.errors import ConfigurationError, DesiredStateError
from reconciler.fanout import FanoutQueue
from reconciler.lease import TargetLeases
from reconciler.ledger import Ledger
from reconciler.runs import RunStore
from reconciler.service import Services, WhoChanged
from reconciler.settings import Settings, load_settings
from reconciler.storage import StorageAccess

if TYPE_CHECKING:  # only the adapters import azure.* and httpx at run time
    import httpx
    from azure.core.credentials_async import AsyncTokenCredential


# Allocations between young-generation collections (CPython's default is 700). See settle_heap.
GC_GEN0_THRESHOLD = 20_000


def settle_heap() -> None:
    """Once per process, when start-up is done (imports, settings, clients' modules loaded).

    The Azure SDKs leave a large heap behind at import (azure-mgmt-network's models alone are
    thousands of classes), and every full collection walked it again: 0.20 s of a 100-hub pass
    (issue #18). `gc.freeze()` moves everything alive now into a permanent generation that all
    future collections ignore (https://docs.python.org/3/library/gc.html#gc.freeze). A pass then
    allocates hundreds of thousands of short-lived objects (responses, JSON, observed values), most
    freed by reference counting alone; a higher gen-0 threshold collects young cycles less often.
    The older generations keep their thresholds, so real garbage cycles are still freed.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def arm_options(settings: Settings) -> ArmOptions:
    return ArmOptions(
        endpoint=settings.arm_endpoint,
        ca_bundle=settings.arm_ca_bundle,
        poll_interval=settings.arm_poll_interval,
        concurrency=settings.arm_concurrency,
        reads_per_second=settings.arm_reads_per_second,
        read_burst=settings.arm_read_burst,
        read_timeout=settings.arm_read_timeout,
        retry_backoff=settings.arm_retry_backoff,
        proxy=settings.outbound_proxy.get_secret_value() if settings.outbound_proxy is not None else None,
    )


def build_arm(settings: Settings) -> Arm:
    credential: AsyncTokenCredential
    if settings.arm_static_token is not None:
        credential = StaticTokenCredential(settings.arm_static_token.get_secret_value())
    else:
        from azure.identity.aio import DefaultAzureCredential

        # Managed identity in Azure (AZURE_CLIENT_ID picks the user-assigned one); az login locally.
        credential = DefaultAzureCredential()
    return Arm(credential, arm_options(settings))


class AgentDirectory:
    """One agent client per peer, cached; the token comes from the app setting the peer names."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self._clients: dict[tuple[str, str], AgentClient] = {}

    def for_peer(self, target: Target, peer: Peer) -> AgentClient | str:
        if peer.agent_url is None or peer.token_setting is None:
            return f"no agent declared for {peer.name}"
        token = self._settings.secret(peer.token_setting)
        if token is None:
            return f"app setting {peer.token_setting} (agent token for {peer.name}) is not set"
        key = (peer.agent_url, peer.token_setting)
        client = self._clients.get(key)
        if client is None:
            verify: str | bool = self._settings.agent_ca_bundle or True
            s = self._settings
            cert = (s.agent_client_cert, s.agent_client_key or s.agent_client_cert) if s.agent_client_cert else None
            try:
                client = AgentClient(
                    peer.agent_url,
                    token,
                    verify=verify,
                    timeout=s.agent_timeout,
                    transport=self._transport,
                    client_cert=cert,
                    allow_http=peer.agent_lab,
                )
            except ConfigurationError as exc:
                return str(exc)
            self._clients[key] = client
        return client

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()


class Runtime:
    """Everything a worker keeps between invocations: `async with Runtime(settings) as rt`.

    Every client is built on entry, on the running loop, and closed on exit, in reverse order;
    a failure half-way closes what was already built. `storage=False` (CLI `plan`, tests) runs
    without ledger, leases and alerts.
    """

    def __init__(self, settings: Settings, *, storage: bool = True) -> None:
        self.settings = settings
        self.storage = storage
        self._stack = AsyncExitStack()
        self._services: Services | None = None
        self._ledger: Ledger | None = None
        self._access: StorageAccess | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("Runtime is not open: use `async with Runtime(settings) as rt`")
        return self._services

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            why = "it is not open" if self._services is None else "it was opened with storage=False"
            raise RuntimeError(f"this Runtime has no drift ledger: {why}")
        return self._ledger

    @property
    def access(self) -> StorageAccess:
        """The storage account's one access (and, in identity form, its one credential) for every
        other storage client of this worker: the fan-out queue, run records, retention."""
        if self._access is None:
            raise RuntimeError("this Runtime has no storage: it is not open, or was opened with storage=False")
        return self._access

    async def __aenter__(self) -> Runtime:
        async with AsyncExitStack() as stack:
            self._services, self._ledger = await self._build(stack)
            self._stack = stack.pop_all()  # built: close them on __aexit__, not now
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._services = self._ledger = self._access = None
        await self._stack.aclose()

    async def _build(self, stack: AsyncExitStack) -> tuple[Services, Ledger | None]:
        s = self.settings
        arm = build_arm(s)
        stack.push_async_callback(arm.close)
        agents = AgentDirectory(s)
        stack.push_async_callback(agents.close)
        ledger: Ledger | None = None
        leases: TargetLeases | None = None
        alerts: notify.AlertStep | None = None
        if self.storage:
            conn = storage.from_settings(s)  # a connection string, or the managed identity
            stack.push_async_callback(conn.close)
            self._access = conn
            ledger = Ledger(conn, table_prefix=s.table_prefix)
            stack.push_async_callback(ledger.close)
            await ledger.ensure_tables()
            leases = TargetLeases(conn, duration_s=s.lease_seconds)
            stack.push_async_callback(leases.close)
            alerts = await notify.build(s, stack)
        services = Services(
            arm=arm,
            agents=agents,
            ledger=ledger,
            leases=leases,
            alerts=alerts,
            verify_timeout=s.verify_timeout,
            verify_interval=s.verify_interval,
            target_concurrency=s.target_concurrency,
            who_changed=_activity_log(s, arm),
        )
        return services, ledger


class Worker:
    """What one Azure Functions worker process keeps between invocations (DESIGN §9).

    Settings are read once; the `Runtime` (and the fan-out queue client) are built on the first
    invocation, on the worker's event loop, and reused: Functions runs a worker's async functions
    on one loop, and aiohttp sessions are bound to the loop that made them. The desired state is
    read once and again only when the file changes.
    """

    def __init__(self, settings: Settings, root: Path | None = None) -> None:
        self.settings = settings
        self.root = root or Path.cwd()
        self.fanout: FanoutQueue | None = None  # the queue, when ARS_FANOUT is on
        self._queue: FanoutQueue | None = None
        self._runs: RunStore | None = None
        self._stack = AsyncExitStack()  # closes the runtime, the queue and the run store
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._state: tuple[Path, int, DesiredState] | None = None

    @classmethod
    def from_environment(cls, root: Path | None = None) -> Worker:
        """Read and check every setting (ConfigurationError names the first bad one)."""
        settings = load_settings()
        identity = storage.from_settings(settings).identity  # checks the identity form's settings too
        if settings.fanout and not (settings.storage_named or identity):
            # The queue trigger binds to this setting by name; the AzureWebJobsStorage fallback
            # that the Python side accepts would leave the trigger listening nowhere.
            raise ConfigurationError(
                "setting ARS_STORAGE_CONNECTION: required when ARS_FANOUT is on (the queue trigger binds to it)"
            )
        return cls(settings, root)

    @property
    def desired_path(self) -> Path:
        p = self.settings.desired_state
        return p if p.is_absolute() else self.root / p

    def check_desired(self) -> DesiredState:
        """`desired()` for start-up: an invalid document is a one-line error naming the setting."""
        try:
            return self.desired()
        except DesiredStateError as exc:
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            first = str(exc).splitlines()[0] if str(exc) else "invalid"
            raise ConfigurationError(f"setting ARS_DESIRED_STATE: {first}{more}") from None

    def missing_secrets(self, state: DesiredState) -> list[str]:
        """Agent-token settings the document names but the environment lacks (each peer is then blind)."""
        names = {p.token_setting for t in state.targets for p in t.peers if p.token_setting}
        return sorted(n for n in names if self.settings.secret(n) is None)

    def desired(self) -> DesiredState:
        """The desired state; re-read when the file's mtime changes. DesiredStateError if invalid."""
        path = self.desired_path
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            mtime = -1  # desired.load reports the unreadable file
        if self._state is None or self._state[:2] != (path, mtime):
            self._state = (path, mtime, desired.load(path))
        return self._state[2]

    async def runtime(self) -> Runtime:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new loop (a test, or the local host restarting): clients of the old one are unusable.
            self._loop, self._lock, self._runtime = loop, asyncio.Lock(), None
            self.fanout = self._queue = self._runs = None
            self._stack = AsyncExitStack()
        assert self._lock is not None
        async with self._lock:
            if self._runtime is None:
                self._runtime = await self._build()
        return self._runtime

    async def _build(self) -> Runtime:
        async with AsyncExitStack() as stack:
            rt = await stack.enter_async_context(Runtime(self.settings))
            conn = rt.access  # closed by the runtime, after the queue and the run store
            queue = FanoutQueue(conn, self.settings.fanout_queue)
            stack.push_async_callback(queue.close)
            await queue.ensure()
            runs = RunStore(conn)
            stack.push_async_callback(runs.close)
            await runs.ensure()
            self._queue, self._runs = queue, runs
            self.fanout = queue if self.settings.fanout else None
            self._stack = stack.pop_all()  # built: kept until aclose()
        return rt

    async def aclose(self) -> None:
        stack, self._stack = self._stack, AsyncExitStack()
        self._runtime = None
        self.fanout = self._queue = self._runs = None
        await stack.aclose()

    @property
    def queue(self) -> FanoutQueue:
        """The fan-out queue, always built (HTTP runs fall back to it); after `runtime()`."""
        if self._queue is None:
            raise RuntimeError("the worker is not started: await Worker.runtime() first")
        return self._queue

    @property
    def runs(self) -> RunStore:
        """HTTP runs that outlive their request; after `runtime()`."""
        if self._runs is None:
            raise RuntimeError("the worker is not started: await Worker.runtime() first")
        return self._runs


def _activity_log(settings: Settings, arm: Arm) -> WhoChanged:
    """Who made an Azure-side change the timer found: the Activity Log, skipping our own calls."""
    from reconciler.activity_log import ActivityLog

    own = [i for i in settings.event_own_ids.split(",") if i.strip()]
    if settings.managed_identity_client_id:
        own.append(settings.managed_identity_client_id)
    return ActivityLog(arm, own).who_changed
