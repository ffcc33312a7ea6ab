"""The composition root: builds every adapter from `Settings`, once per worker.

Owns which concrete client backs each port of `service.Services`. Credentials are chosen by
settings (static token for the local emulator, DefaultAzureCredential otherwise), not by
checking where we run.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from reconciler import desired, notify
from reconciler.agent_client import AgentClient, AgentState, BgpIntent
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.desired import DesiredState, Peer, Target
from reconciler.errors import ConfigurationError, DesiredStateError, PermanentError
from reconciler.observed import AgentNeighborView, AgentView, Route
from reconciler.plan import Intent
from reconciler.service import Services
from reconciler.settings import Settings, load_settings


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
    )


def build_arm(settings: Settings) -> Arm:
    credential: Any
    if settings.arm_static_token is not None:
        credential = StaticTokenCredential(settings.arm_static_token.get_secret_value())
    else:
        from azure.identity.aio import DefaultAzureCredential

        # Managed identity in Azure (AZURE_CLIENT_ID picks the user-assigned one); az login locally.
        credential = DefaultAzureCredential()
    return Arm(credential, arm_options(settings))


def agent_view_from_state(state: AgentState) -> AgentView:
    """Translate the agent client's state value into the observation's AgentView."""
    return AgentView(
        local_asn=state.local_asn,
        config_hash=state.config_hash,
        neighbors=tuple(
            AgentNeighborView(
                ip=n.ip,
                remote_asn=n.remote_asn,
                state=n.state,
                advertised=tuple(Route(a.prefix, a.next_hop, a.as_path) for a in n.advertised),
            )
            for n in state.neighbors
        ),
    )


class _Agent:
    """Adapts the agent client to the service's AgentPort."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    async def view(self) -> AgentView:
        return agent_view_from_state(await self._client.state())

    async def apply(self, intent: Intent) -> str:
        result = await self._client.apply_intent(
            BgpIntent(
                local_asn=intent.local_asn,
                neighbors=intent.neighbors,
                prefixes=intent.prefixes,
                next_hop=intent.next_hop,
            )
        )
        if result.rolled_back:
            raise PermanentError(f"agent rolled back: {result.message}")
        if not result.changed:
            return "agent: no change needed"
        return "agent: " + "; ".join(result.changes[:10])


class AgentDirectory:
    """One agent client per peer, cached; the token comes from the app setting the peer names."""

    def __init__(self, settings: Settings, transport: Any = None) -> None:
        self._settings = settings
        self._transport = transport
        self._clients: dict[tuple[str, str], AgentClient] = {}

    def for_peer(self, target: Target, peer: Peer) -> _Agent | str:
        if peer.agent_url is None or peer.token_setting is None:
            return f"no agent declared for {peer.name}"
        token = self._settings.secret(peer.token_setting)
        if token is None:
            return f"app setting {peer.token_setting} (agent token for {peer.name}) is not set"
        key = (peer.agent_url, peer.token_setting)
        client = self._clients.get(key)
        if client is None:
            verify: str | bool = self._settings.agent_ca_bundle or True
            client = AgentClient(
                peer.agent_url, token, verify=verify, timeout=self._settings.agent_timeout, transport=self._transport
            )
            self._clients[key] = client
        return _Agent(client)

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()


class Runtime:
    """Everything a worker keeps between invocations; `async with Runtime(settings) as rt`."""

    def __init__(self, settings: Settings, *, storage: bool = True) -> None:
        self.settings = settings
        self.storage = storage
        self._stack = AsyncExitStack()
        self.services: Services | None = None
        self.ledger: Any = None

    async def __aenter__(self) -> Runtime:
        try:
            return await self._open()
        except BaseException:
            # `async with` does not call __aexit__ when __aenter__ fails: close what was built
            # (the ARM session, agent clients, a ledger whose tables could not be made) here.
            await self._stack.aclose()
            raise

    async def _open(self) -> Runtime:
        s = self.settings
        arm = build_arm(s)
        self._stack.push_async_callback(arm.close)
        agents = AgentDirectory(s)
        self._stack.push_async_callback(agents.close)
        ledger = leases = alerts = None
        if self.storage:
            from reconciler.lease import TargetLeases
            from reconciler.ledger import Ledger

            conn = s.storage_connection.get_secret_value()
            ledger = Ledger(conn, table_prefix=s.table_prefix)
            self._stack.push_async_callback(ledger.close)
            await ledger.ensure_tables()
            leases = TargetLeases(conn, duration_s=s.lease_seconds)
            self._stack.push_async_callback(leases.close)
            alerts = await notify.build(s, self._stack)
        self.ledger = ledger
        self.services = Services(
            arm=arm,
            agents=agents,
            ledger=ledger,
            leases=leases,
            alerts=alerts,
            verify_timeout=s.verify_timeout,
            verify_interval=s.verify_interval,
            target_concurrency=s.target_concurrency,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


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
        self.fanout: Any = None  # reconciler.fanout.FanoutQueue when ARS_FANOUT is on
        self.queue: Any = None  # the same queue, always: HTTP runs fall back to it
        self.runs: Any = None  # reconciler.runs.RunStore: HTTP runs that outlive their request
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._state: tuple[Path, int, DesiredState] | None = None

    @classmethod
    def from_environment(cls, root: Path | None = None) -> Worker:
        """Read and check every setting (ConfigurationError names the first bad one)."""
        settings = load_settings()
        if settings.fanout and not os.environ.get("ARS_STORAGE_CONNECTION"):
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
            self.fanout = self.queue = self.runs = None
        assert self._lock is not None
        async with self._lock:
            if self._runtime is None:
                self._runtime = await self._build()
        return self._runtime

    async def _build(self) -> Runtime:
        rt = Runtime(self.settings)
        try:
            await rt.__aenter__()
            from reconciler.fanout import FanoutQueue
            from reconciler.runs import RunStore

            conn = self.settings.storage_connection.get_secret_value()
            queue = FanoutQueue(conn, self.settings.fanout_queue)
            rt._stack.push_async_callback(queue.close)
            await queue.ensure()
            runs = RunStore(conn)
            rt._stack.push_async_callback(runs.close)
            await runs.ensure()
            self.queue, self.runs = queue, runs
            self.fanout = queue if self.settings.fanout else None
        except BaseException:
            await rt.__aexit__(None, None, None)  # close what was built before the failure
            raise
        return rt

    async def aclose(self) -> None:
        rt, self._runtime = self._runtime, None
        self.fanout = self.queue = self.runs = None
        if rt is not None:
            await rt.__aexit__(None, None, None)
