"""The agent's change reports: FRR changes made around the agent are reported, signed so the
reconciler's verifier accepts them; its own applied intents are marked as its own; an unreachable
reconciler is retried with back-off and never blocks the watcher."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

from nva_agent.change_reports import ChangeReporter
from nva_agent.intent import OwnConfig
from nva_agent.render import config_hash
from reconciler.change_report import ChangedBy, report_key, verify

TOKEN = "agent-token-0123456789abcdef0123456789abcdef"


class FakeFrr:
    """A small stand-in for FRR's vtysh (FrrPort): a config text and session states."""

    def __init__(self) -> None:
        self.config = "router bgp 65001\n network 0.0.0.0/0\n"
        self.states = {"10.0.2.4": "Established", "10.0.2.5": "Established"}
        self.sent: dict[str, int] = {}

    async def running_config(self) -> str:
        return self.config

    async def show_json(self, command: str) -> dict[str, Any]:
        return {"ipv4Unicast": {"peers": {ip: {"state": s, "pfxSnt": self.sent.get(ip, 1)}
                                          for ip, s in self.states.items()}}}  # fmt: skip

    async def check(self, config: str) -> None: ...
    async def reload(self, config: str) -> None: ...
    async def soft_out(self) -> None: ...


def reporter(frr: FakeFrr, handler: Any, own: list[OwnConfig], tokens: tuple[str, ...] = (TOKEN,)) -> ChangeReporter:
    async def no_sleep(_: float) -> None:
        return None

    return ChangeReporter(
        frr, "https://reconciler.example/api/agent/changes", "10.0.1.6", lambda: tokens,
        apply_lock=asyncio.Lock(), own=lambda: own[0], transport=httpx.MockTransport(handler),
        sleep=no_sleep,
    )  # fmt: skip


async def test_an_outside_edit_is_reported_signed_and_verifiable() -> None:
    got: list[httpx.Request] = []
    frr, applied = FakeFrr(), [OwnConfig()]
    r = reporter(frr, lambda req: (got.append(req), httpx.Response(202))[1], applied)
    assert await r.poll_once() is None  # first read: the baseline
    frr.config = "router bgp 65001\n"  # `no network 0.0.0.0/0` typed into vtysh
    report = await r.poll_once()
    assert report is not None and report["by"] == "outside-agent" and report["kind"] == "config"
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda req: (got.append(req), httpx.Response(202))[1])) as c:
        assert await r._send(c, r.queue.get_nowait())
    checked = verify(dict(got[-1].headers), got[-1].content, report_key(TOKEN), datetime.now(UTC))
    assert checked.by is ChangedBy.OUTSIDE and checked.nva_ip == "10.0.1.6"


async def test_mid_rotation_a_report_the_reconciler_refuses_is_signed_again_with_the_next_token() -> None:
    # Rotation step 2: the reconciler holds only the next token; the agent's file holds both.
    nxt = "next-token-0123456789abcdef0123456789abcdef012"
    got: list[httpx.Request] = []

    def only_next(req: httpx.Request) -> httpx.Response:
        got.append(req)
        try:
            verify(dict(req.headers), req.content, report_key(nxt), datetime.now(UTC))
        except Exception:
            return httpx.Response(401)
        return httpx.Response(202)

    frr = FakeFrr()
    r = reporter(frr, only_next, [OwnConfig()], tokens=(TOKEN, nxt))
    await r.poll_once()
    frr.config = "router bgp 65001\n"
    assert await r.poll_once() is not None
    async with httpx.AsyncClient(transport=httpx.MockTransport(only_next)) as c:
        assert await r._send(c, r.queue.get_nowait())
    assert r.sent == 1 and len(got) == 2  # refused with the current token, accepted with the next


async def test_a_lost_session_is_reported_and_the_agents_own_apply_is_marked() -> None:
    frr, applied = FakeFrr(), [OwnConfig()]
    r = reporter(frr, lambda req: httpx.Response(202), applied)
    await r.poll_once()
    frr.states["10.0.2.5"] = "Active"
    lost = await r.poll_once()
    assert lost is not None and lost["kind"] == "sessions" and "10.0.2.5=Active" in lost["summary"]
    frr.config += " neighbor 10.0.2.5 remote-as 65515\n"
    applied[0] = OwnConfig(1, config_hash(frr.config))  # the agent applied an intent meanwhile
    own = await r.poll_once()
    assert own is not None and own["by"] == "agent"
    assert await r.poll_once() is None  # nothing changed since


async def test_an_unreachable_reconciler_is_retried_then_dropped_without_blocking() -> None:
    calls = 0

    def down(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=req)

    frr, applied = FakeFrr(), [OwnConfig()]
    r = reporter(frr, down, applied)
    await r.poll_once()
    frr.config = "changed"
    await r.poll_once()
    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as c:
        assert not await r._send(c, r.queue.get_nowait())
    assert calls == r.retries
    for i in range(40):  # the queue is bounded: the oldest reports go, the watcher never waits
        frr.config = f"edit {i}"
        await r.poll_once()
    assert r.queue.qsize() == 32 and r.dropped == 40 - 32


async def test_an_outside_edit_right_after_the_agents_apply_is_reported_as_outside() -> None:
    # The race: the agent applies an intent and, within the watcher's next second, someone edits
    # FRR by hand. The edit must not pass for the agent's own change.
    frr, own = FakeFrr(), [OwnConfig()]
    r = reporter(frr, lambda req: httpx.Response(202), own)
    await r.poll_once()
    frr.config += " neighbor 10.0.2.5 remote-as 65515\n"  # the agent's apply
    own[0] = OwnConfig(1, config_hash(frr.config))
    agents = frr.config
    frr.config = frr.config.replace(" network 0.0.0.0/0\n", "")  # the vtysh edit, before the next poll
    report = await r.poll_once()
    assert report is not None and report["by"] == "outside-agent" and report["kind"] == "config"
    assert report["old_hash"] == config_hash(agents) and report["new_hash"] == config_hash(frr.config)
    assert "after the agent's own apply" in report["summary"]
    assert await r.poll_once() is None


async def test_a_withdrawn_advertisement_without_a_config_change_is_reported() -> None:
    # The route behind `network 0.0.0.0/0` left the RIB: FRR stops advertising it, config unchanged.
    frr = FakeFrr()
    r = reporter(frr, lambda req: httpx.Response(202), [OwnConfig()])
    await r.poll_once()
    frr.sent = {"10.0.2.4": 0, "10.0.2.5": 0}
    report = await r.poll_once()
    assert report is not None and report["kind"] == "advertised" and report["by"] == "outside-agent"
    assert "10.0.2.4=1,10.0.2.5=1 -> 10.0.2.4=0,10.0.2.5=0" in report["summary"]
