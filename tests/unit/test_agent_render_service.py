"""IntentService's step order with a small fake FRR (a real class, no mocks): what is applied,
what is rolled back, and what is never touched. Rendering itself is in test_agent_render.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nva_agent import render
from nva_agent.frr import ConfigRejected, FrrError
from nva_agent.intent import IntentConflict, IntentService, Timing
from nva_agent.models import BgpIntent
from tests.unit.test_agent_render import RUNNING

INTENT = BgpIntent.model_validate(
    {
        "local_asn": 65001,
        "neighbors": [{"ip": "10.0.2.4", "asn": 65515}],
        "prefixes": ["0.0.0.0/0"],
        "next_hop": "10.0.3.4",
    }
)


class FakeFrr:
    """Holds a running config; advertises what the config says once it is loaded."""

    def __init__(self, running: str, *, advertise: bool = True, fail_reload: int = 0, reject: bool = False) -> None:
        self.running = running
        self.advertise = advertise
        self.fail_reload = fail_reload
        self.reject = reject
        self.calls: list[str] = []

    async def show_json(self, command: str) -> dict[str, Any]:
        if command == "show bgp summary json":
            peers = {"10.0.2.4": {"remoteAs": 65515, "state": "Established", "peerUptimeMsec": 1}}
            return {"ipv4Unicast": {"as": 65001, "routerId": "10.0.1.4", "peers": peers}}
        good = self.advertise and "set ip next-hop 10.0.3.4" in self.running and "  network 0.0.0.0/0 route-map nva-agent-originate" in self.running
        routes = {"0.0.0.0/0": {"nextHop": "10.0.3.4", "path": ""}} if good else {}
        return {"advertisedRoutes": routes}

    async def running_config(self) -> str:
        return self.running

    async def check(self, config: str) -> None:
        self.calls.append("check")
        if self.reject:
            raise ConfigRejected("line 3: % Unknown command")

    async def reload(self, config: str) -> None:
        self.calls.append("reload")
        if self.fail_reload:
            self.fail_reload -= 1
            raise FrrError("frr-reload.py exited 1")
        self.running = config

    async def soft_out(self) -> None:
        self.calls.append("soft_out")


FAST = Timing(verify_timeout=0.05, poll_interval=0.001)


async def test_a_change_is_checked_loaded_soft_cleared_and_verified() -> None:
    frr = FakeFrr(RUNNING)
    res = await IntentService(frr, FAST).apply(INTENT)
    assert (res.changed, res.applied, res.rolled_back) == (True, True, False)
    assert frr.calls == ["check", "reload", "soft_out"]
    again = await IntentService(frr, FAST).apply(INTENT)
    assert (again.changed, again.applied, again.changes) == (False, False, [])
    assert frr.calls == ["check", "reload", "soft_out"]  # nothing reloaded the second time


async def test_a_dry_run_validates_but_loads_nothing() -> None:
    frr = FakeFrr(RUNNING)
    res = await IntentService(frr, FAST).apply(INTENT.model_copy(update={"dry_run": True}))
    assert (res.changed, res.applied, res.dry_run) == (True, False, True)
    assert frr.calls == ["check"] and frr.running == RUNNING


async def test_a_rejected_render_loads_nothing() -> None:
    frr = FakeFrr(RUNNING, reject=True)
    res = await IntentService(frr, FAST).apply(INTENT)
    assert (res.applied, res.rolled_back) == (False, False)
    assert "rejected" in res.message and frr.calls == ["check"]


async def test_a_read_back_that_never_matches_restores_the_previous_config() -> None:
    frr = FakeFrr(RUNNING, advertise=False)
    res = await IntentService(frr, FAST).apply(INTENT)
    assert (res.changed, res.applied, res.rolled_back) == (True, False, True)
    assert "neighbor 10.0.2.4 is not sent 0.0.0.0/0" in res.message
    assert render.changes(render.parse(frr.running), render.parse(RUNNING)) == []


async def test_a_failed_reload_is_rolled_back() -> None:
    frr = FakeFrr(RUNNING, fail_reload=1)
    res = await IntentService(frr, FAST).apply(INTENT)
    assert res.rolled_back and "frr-reload.py exited 1" in res.message
    assert frr.calls == ["check", "reload", "reload", "soft_out"]


async def test_a_failed_rollback_surfaces_as_frr_error() -> None:
    with pytest.raises(FrrError):
        await IntentService(FakeFrr(RUNNING, fail_reload=2), FAST).apply(INTENT)


async def test_another_local_as_is_a_conflict() -> None:
    with pytest.raises(IntentConflict):
        await IntentService(FakeFrr(RUNNING), FAST).apply(INTENT.model_copy(update={"local_asn": 65002}))


async def test_concurrent_intents_run_one_at_a_time() -> None:
    frr = FakeFrr(RUNNING)
    service = IntentService(frr, FAST)
    results = await asyncio.gather(*(service.apply(INTENT) for _ in range(4)))
    assert sorted(r.applied for r in results) == [False, False, False, True]
    assert frr.calls.count("reload") == 1
