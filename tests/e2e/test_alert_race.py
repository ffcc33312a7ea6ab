"""A slow pass must not announce "resolved" from an observation older than the one that fired.

Pass P1 observes hub-weu healthy, then spends seconds on hub-neu (slow ARM). Meanwhile hub-weu
breaks and pass P2 (hub-weu only) fires. Before, P1's alert step ran after the whole pass, with its
old "healthy" observation, and announced RESOLVED for a drift P2 still saw. Now each target's
alert step runs under its lease right after its own observation, so P1 speaks before P2 can look.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from emulator import ArmEmulator, Fault
from localenv.azurite import Azurite
from localenv.webhook import WebhookReceiver
from reconciler.composition import Runtime
from reconciler.errors import LockedError
from reconciler.lease import TargetLeases
from reconciler.settings import load_settings
from tests.e2e.harness import SUB, A, B, fleet_desired, run_pass, set_agent_tokens, settings_env, target_report

pytestmark = pytest.mark.azurite


async def released(leases: TargetLeases, target: str, timeout: float = 30.0) -> None:
    """Poll until nobody holds `target`'s lease (take it and give it back at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with leases.hold(target):
                return
        except LockedError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def hub_reads(emulator: ArmEmulator, subscription: str) -> int:
    return sum(1 for r in emulator.requests if r.op == "hub.get" and r.subscription == subscription)


async def read_seen(emulator: ArmEmulator, subscription: str, before: int, timeout: float = 30.0) -> None:
    """Poll until the emulator has served one more hub read of `subscription` than `before`."""
    deadline = time.monotonic() + timeout
    while hub_reads(emulator, subscription) <= before:
        assert time.monotonic() < deadline, "the pass never read the hub"
        await asyncio.sleep(0.02)


def kinds_for(webhook: WebhookReceiver, target: str) -> list[str]:
    out = []
    for r in webhook.accepted():
        words = r.json()["attachments"][0]["content"]["body"][0]["items"][0]["text"].split(" · ")
        if words[-1] == target:
            out.append(words[0])
    return out


async def test_a_slow_pass_does_not_announce_resolved_over_a_newer_observation(
    emulator: ArmEmulator, azurite: Azurite, storage_prefix: str, webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_agent_tokens(emulator, monkeypatch)
    env = settings_env(emulator, azurite.connection_string, storage_prefix, ARS_TEAMS_WEBHOOK_URL=webhook.url,
                       ARS_ALERT_FIXED_NOTICE="false")
    state = fleet_desired(emulator)
    async with Runtime(load_settings(env)) as rt, TargetLeases(azurite.connection_string, duration_s=15) as leases:
        # hub-weu fires first, so that a later "resolved" would be announced at all.
        with emulator.world.lock:
            emulator.world.route_server(SUB[A], "rg-hub", "ars-hub").branch_to_branch = False
        first = await run_pass(rt, state, only=A)
        assert target_report(first, A).remaining
        assert kinds_for(webhook, A) == ["FIRING"]
        with emulator.world.lock:
            emulator.world.route_server(SUB[A], "rg-hub", "ars-hub").branch_to_branch = True

        emulator.inject("hub.get", Fault.latency(4.0), subscription=SUB[B])  # P1 is slow on hub-neu
        reads = hub_reads(emulator, SUB[A])
        slow = asyncio.create_task(run_pass(rt, state))  # P1: sees hub-weu healthy
        # P1 reads hub-weu under its lease: once the read is seen, the lease is P1's (or was). Only
        # then does "nobody holds it" mean "P1 is done with it" rather than "P1 has not started".
        await read_seen(emulator, SUB[A], reads)
        await released(leases, A)  # P1 is done with hub-weu (and, now, with its alerts)
        with emulator.world.lock:  # …and hub-weu breaks again
            emulator.world.route_server(SUB[A], "rg-hub", "ars-hub").branch_to_branch = False
        newer = await run_pass(rt, state, only=A)  # P2 sees it
        assert target_report(newer, A).remaining
        p1 = await slow
        emulator.clear_faults()
        assert not target_report(p1, A).remaining  # P1's observation of hub-weu was the healthy one

        # What the channel heard about hub-weu, in order: it must end firing, not resolved.
        heard = kinds_for(webhook, A)
        assert heard[-1] == "FIRING", heard
        assert heard == ["FIRING", "RESOLVED", "FIRING"], heard
