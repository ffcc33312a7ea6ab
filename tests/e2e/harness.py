"""Shared wiring for the reliability e2e tests: a two-target fleet on the ARM emulator + Azurite.

Owns the fleet's desired state (schemas/examples/two-targets.yaml with its agents served by the
emulator), the settings a test pass runs with, named breaks of each NVA, and `Changes`, which
counts the FRR-side changes the emulated agents really made (a fix applied twice shows up here,
however the client retried). It must not decide what a test expects.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import emulator.agent as emulated_agent
from emulator import Announcement, ArmEmulator
from reconciler import desired
from reconciler.composition import Runtime
from reconciler.service import PassReport, reconcile
from reconciler.trigger import Trigger

ROOT = Path(__file__).resolve().parents[2]
A, B = "hub-weu", "hub-neu"  # target names
NVA = {A: "10.0.1.6", B: "10.1.1.6"}
FIREWALL_IP = {A: "10.0.3.4", B: "10.1.3.4"}
PREFIXES = {A: ("0.0.0.0/0",), B: ("0.0.0.0/1", "128.0.0.0/1")}
ASN = {A: "65001", B: "65002"}
SUB = {A: "sub-1", B: "sub-2"}
TOKEN_SETTINGS = {A: "NVA1_AGENT_TOKEN", B: "NVAA_AGENT_TOKEN"}


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target(name: str, sub: str, rg: str, rs: str, fw: str, gw: dict[str, Any], peer: dict[str, Any],
            prefixes: list[str], vnet: str, setting: str) -> dict[str, Any]:
    breakout = [{"prefix": "0.0.0.0/0", "next_hop_type": "Internet"}]
    return {
        "name": name, "subscription_id": sub, "resource_group": rg, "route_server": rs,
        "firewall": {"name": fw}, "gateways": [gw], "prefixes": prefixes,
        "peers": [{**peer, "token_setting": setting}],
        "subnets": [{"vnet": vnet, "subnet": s, "routes": breakout} for s in ("AzureFirewallSubnet", "NvaSubnet")],
        "policy": {"nva_fixes": True, "azure_writes": False, "action_budget": 5},
    }


def fleet_document() -> dict[str, Any]:
    """The desired state of the emulator's two-targets world (emulator/worlds/two-targets.yaml)."""
    return {
        "version": 1,
        "targets": [
            _target(A, "sub-1", "rg-hub", "ars-hub", "fw-hub",
                    {"name": "ergw", "type": "ExpressRoute", "onprem_peers": ["10.0.0.12"]},
                    {"name": "nva1", "ip": NVA[A], "asn": 65001}, list(PREFIXES[A]), "hub-vnet", TOKEN_SETTINGS[A]),
            _target(B, "sub-2", "rg-hub2", "ars-hub2", "fw-hub2",
                    {"name": "vpngw", "type": "Vpn", "onprem_peers": ["10.50.0.1"]},
                    {"name": "nva2", "ip": NVA[B], "asn": 65002}, list(PREFIXES[B]), "hub2-vnet", TOKEN_SETTINGS[B]),
        ],
    }


def fleet_desired(
    emu: ArmEmulator, *, suspend: bool = False, agent_urls: dict[str, str] | None = None
) -> desired.DesiredState:
    """The two-target document with every agent served by `emu` (or the URL given per target)."""
    doc = fleet_document()
    for t in doc["targets"]:
        t["suspend"] = suspend
        for p in t["peers"]:
            p["agent_url"] = (agent_urls or {}).get(t["name"]) or emu.agent_url(p["ip"])
    return desired.parse(doc, "fleet")


def set_agent_tokens(emu: ArmEmulator, monkeypatch: pytest.MonkeyPatch, wrong: tuple[str, ...] = ()) -> None:
    """Put each agent's token in the app setting the document names (a wrong one for `wrong` targets)."""
    for target, setting in TOKEN_SETTINGS.items():
        token = emu.world.nva(NVA[target]).agent_token
        monkeypatch.setenv(setting, "not-the-token" if target in wrong else token)


def settings_env(emu: ArmEmulator, storage: str, prefix: str, **extra: str) -> dict[str, str]:
    """Fast, strict test settings; `extra` overrides by app-setting name."""
    env = {
        "ARS_ARM_ENDPOINT": emu.base_url,
        "ARS_ARM_CA_BUNDLE": emu.ca_file,
        "ARS_ARM_STATIC_TOKEN": "emulator-token",
        "ARS_ARM_POLL_INTERVAL": "0",
        "ARS_ARM_RETRY_BACKOFF": "0.01",
        "ARS_ARM_READ_TIMEOUT": "10",
        "ARS_AGENT_CA_BUNDLE": emu.ca_file,
        "ARS_AGENT_TIMEOUT": "5",
        "ARS_STORAGE_CONNECTION": storage,
        "ARS_TABLE_PREFIX": prefix,
        "ARS_VERIFY_INTERVAL": "0.02",
        "ARS_VERIFY_TIMEOUT": "0.5",
        "ARS_LEASE_SECONDS": "15",
        "ARS_ALERT_HOLD_DOWN": "0",
    }
    env.update(extra)
    return env


def break_next_hop(emu: ArmEmulator, target: str) -> None:
    """A route-map edit lost `set ip next-hop`: the NVA's prefixes point at the NVA itself."""
    with emu.world.lock:
        emu.world.nva(NVA[target]).announcements = [Announcement(p, NVA[target], ASN[target]) for p in PREFIXES[target]]


def nva_healthy(emu: ArmEmulator, target: str) -> bool:
    """The NVA announces exactly its prefixes, each with the firewall as next hop."""
    with emu.world.lock:
        anns = emu.world.nva(NVA[target]).announcements
        return sorted((a.prefix, a.next_hop) for a in anns) == sorted((p, FIREWALL_IP[target]) for p in PREFIXES[target])


@dataclass
class Changes:
    """Every intent the emulated agents applied, with whether it changed the NVA's config."""

    applied: list[tuple[str, bool]] = field(default_factory=list)  # (nva ip, changed)
    after_apply: list[Any] = field(default_factory=list)  # callables run after each apply (arm faults)

    def changed(self, target: str) -> int:
        return sum(1 for ip, ch in self.applied if ip == NVA[target] and ch)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Changes:
        real = emulated_agent.apply_intent

        def counting(world: Any, nva: Any, intent: Any, uptime_ms: int) -> dict[str, Any]:
            result: dict[str, Any] = real(world, nva, intent, uptime_ms)
            self.applied.append((nva.ip, bool(result.get("changed"))))
            for hook in self.after_apply:
                hook(nva.ip)
            return result

        monkeypatch.setattr(emulated_agent, "apply_intent", counting)
        return self


async def run_pass(rt: Runtime, state: desired.DesiredState, **kw: Any) -> PassReport:
    assert rt.services is not None
    return await reconcile(rt.services, state, trigger=kw.pop("trigger", Trigger.CLI), **kw)


def target_report(report: PassReport, name: str) -> Any:
    return next(t for t in report.targets if t.target == name)


def blind_reads(t: Any) -> set[str]:
    """The reads a target report says failed (OBSERVATION_FAILED drift, by `read=` part)."""
    return {d.part("read") or "" for d in t.drifts + t.remaining if d.code.value == "OBSERVATION_FAILED"}


async def settle(emu: ArmEmulator, timeout: float = 10.0) -> None:
    """Wait (polling, on the running loop) until the emulator has finished every request.

    A read the reconciler timed out is still being answered by a delayed emulator thread; until
    that thread closes its socket, the client's TLS transport waits for the peer's close_notify.
    Closing the test's event loop before then would leave the transport unclosed (a
    ResourceWarning). Long-lived workers never close their loop, so this is a test-only concern.
    """
    import asyncio
    import time

    server = getattr(emu, "_server", None)
    deadline = time.monotonic() + timeout
    while server is not None and getattr(server, "_workers", None):
        assert time.monotonic() < deadline, "emulator requests still running after the test"
        await asyncio.sleep(0.02)
