"""Issue #18: the ARM and Storage clients never consult the environment per request, and the one
proxy setting (ARS_HTTPS_PROXY, read once at start-up) is honoured by both.

Real clients built by the composition root and the real adapters, against the ARM emulator over
HTTPS, Azurite, and a forward proxy on loopback that records each request passing through it.
With aiohttp's trust_env (the old default) a proxy in HTTPS_PROXY/HTTP_PROXY was used, looked up
on every request; now it is not read at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from emulator import ArmEmulator
from localenv.azurite import Azurite
from reconciler import desired, storage
from reconciler.composition import build_arm
from reconciler.diff import diff
from reconciler.event_intake import EventIntake
from reconciler.fanout import FanoutQueue
from reconciler.lease import TargetLeases
from reconciler.ledger import Ledger
from reconciler.outbox import AlertStore
from reconciler.settings import load_settings
from tests.fixtures.proxy import ForwardProxy

REFERENCE = desired.load("schemas/examples/reference-lab.yaml").targets[0]
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy() as p:
        yield p


@pytest.fixture
def proxy_in_environment(proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> ForwardProxy:
    """The recording proxy named in every proxy variable aiohttp reads, with nothing bypassed."""
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return proxy


def arm_settings(emu: ArmEmulator, **extra: str) -> dict[str, str]:
    return {
        "ARS_ARM_ENDPOINT": emu.base_url,
        "ARS_ARM_CA_BUNDLE": emu.ca_file,
        "ARS_ARM_STATIC_TOKEN": "emulator-token",
        "ARS_ARM_POLL_INTERVAL": "0",
        **extra,
    }


async def test_arm_reads_do_not_use_a_proxy_from_the_environment(
    emulator: ArmEmulator, proxy_in_environment: ForwardProxy
) -> None:
    arm = build_arm(load_settings(arm_settings(emulator)))
    try:
        assert diff(REFERENCE, await arm.observe(REFERENCE)) == []
        assert arm._http().trust_env is False  # the session the SDK's transport was handed
    finally:
        await arm.close()
    assert proxy_in_environment.seen == []
    assert emulator.requests  # the reads went straight to the emulator


async def test_arm_reads_go_through_the_configured_proxy(emulator: ArmEmulator, proxy: ForwardProxy) -> None:
    settings = load_settings(arm_settings(emulator, ARS_HTTPS_PROXY=proxy.url))
    arm = build_arm(settings)
    try:
        assert diff(REFERENCE, await arm.observe(REFERENCE)) == []
    finally:
        await arm.close()
    host = urlsplit(emulator.base_url).netloc
    assert proxy.seen, "no request reached the proxy"
    assert set(proxy.seen) == {f"CONNECT {host} HTTP/1.1"}  # HTTPS: a tunnel to the emulator, nothing else


async def test_storage_clients_do_not_use_a_proxy_from_the_environment(
    azurite: Azurite, storage_prefix: str, proxy_in_environment: ForwardProxy
) -> None:
    conn = azurite.connection_string
    async with Ledger(conn, storage_prefix) as ledger:
        await ledger.ensure_tables()
    async with AlertStore(conn, storage_prefix) as alerts:
        assert await alerts.load_states(["t1"]) == {}
    async with TargetLeases(conn, container=f"{storage_prefix}-leases") as leases, leases.hold("t1"):
        pass
    queue = FanoutQueue(conn, f"{storage_prefix}-q")
    try:
        await queue.ensure()
    finally:
        await queue.close()
    intake = EventIntake(load_settings({"ARS_STORAGE_CONNECTION": conn, "ARS_TABLE_PREFIX": storage_prefix,
                                        "ARS_FANOUT_QUEUE": f"{storage_prefix}-ev"}))  # fmt: skip
    try:
        assert await intake.claim("t1") == []  # builds its events table and queue clients, reads a row
    finally:
        await intake.aclose()
    assert proxy_in_environment.seen == []


async def test_storage_clients_go_through_the_configured_proxy(
    azurite: Azurite, storage_prefix: str, proxy: ForwardProxy
) -> None:
    settings = load_settings({"ARS_STORAGE_CONNECTION": azurite.connection_string, "ARS_HTTPS_PROXY": proxy.url})
    access = storage.from_settings(settings)
    async with Ledger(access, storage_prefix) as ledger:
        await ledger.ensure_tables()
    tables = len(proxy.seen)
    async with TargetLeases(access, container=f"{storage_prefix}-leases") as leases, leases.hold("t1"):
        pass
    assert tables > 0, "no table request reached the proxy"
    assert len(proxy.seen) > tables, "no blob request reached the proxy"
    # Azurite is plain HTTP: each request reaches the proxy in absolute form, naming Azurite.
    assert all(line.split()[1].startswith("http://127.0.0.1:") for line in proxy.seen), proxy.seen


def test_a_proxy_variable_in_the_environment_is_named_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://proxy-{uuid.uuid4().hex[:6]}:3128")
    assert load_settings({}).ignored_proxy_variables == ("HTTPS_PROXY",)
    monkeypatch.delenv("HTTPS_PROXY")
    assert load_settings({}).ignored_proxy_variables == ()


def test_the_proxy_setting_must_be_an_http_url() -> None:
    from reconciler.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="ARS_HTTPS_PROXY"):
        load_settings({"ARS_HTTPS_PROXY": "proxy.example:3128"})
