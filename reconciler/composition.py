"""The composition root: builds every adapter from `Settings`, once per worker.

Owns which concrete client backs each port of `service.Services`. Credentials are chosen by
settings (static token for the local emulator, DefaultAzureCredential otherwise), not by
checking where we run.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.desired import Peer, Target
from reconciler.observed import AgentView
from reconciler.plan import Intent
from reconciler.service import Services, agent_view_from_state
from reconciler.settings import Settings


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


class _Agent:
    """Adapts the agent client to the service's AgentPort."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def view(self) -> AgentView:
        return agent_view_from_state(await self._client.state())

    async def apply(self, intent: Intent) -> str:
        from reconciler.agent_client import BgpIntent

        result = await self._client.apply_intent(
            BgpIntent(
                local_asn=intent.local_asn,
                neighbors=intent.neighbors,
                prefixes=intent.prefixes,
                next_hop=intent.next_hop,
            )
        )
        if result.rolled_back:
            from reconciler.errors import PermanentError

            raise PermanentError(f"agent rolled back: {result.message}")
        if not result.changed:
            return "agent: no change needed"
        return "agent: " + "; ".join(result.changes[:10])


class AgentDirectory:
    """One agent client per peer, cached; the token comes from the app setting the peer names."""

    def __init__(self, settings: Settings, transport: Any = None) -> None:
        self._settings = settings
        self._transport = transport
        self._clients: dict[tuple[str, str], Any] = {}

    def for_peer(self, target: Target, peer: Peer) -> _Agent | str:
        if peer.agent_url is None or peer.token_setting is None:
            return f"no agent declared for {peer.name}"
        token = self._settings.secret(peer.token_setting)
        if token is None:
            return f"app setting {peer.token_setting} (agent token for {peer.name}) is not set"
        key = (peer.agent_url, peer.token_setting)
        client = self._clients.get(key)
        if client is None:
            from reconciler.agent_client import AgentClient

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
            await ledger.ensure_tables()
            self._stack.push_async_callback(ledger.close)
            leases = TargetLeases(conn, duration_s=s.lease_seconds)
            self._stack.push_async_callback(leases.close)
            alerts = await _alerts(s, self._stack)
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


async def _alerts(settings: Settings, stack: AsyncExitStack) -> Any:
    """The Teams alert pipeline, when a webhook is configured."""
    try:
        from reconciler.alert_pipeline import build_alert_pipeline
    except ImportError:
        return None
    return await build_alert_pipeline(settings, stack)
