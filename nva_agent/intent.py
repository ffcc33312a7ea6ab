"""Applying a BGP intent to FRR: check the local policy, read, render, validate, reload,
soft-clear, verify, roll back; and the cached health check.

Owns the order of those steps, the one-writer lock, the verification deadline and the health
cache. It talks to FRR only through FrrPort, renders only through `render` and judges intents
only through `policy`; it must not know HTTP or where the policy comes from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nva_agent import policy, render, state
from nva_agent.frr import ConfigRejected, FrrError, FrrPort
from nva_agent.models import AgentState, BgpIntent, IntentResult

BGP_SUMMARY = "show bgp summary json"
log = logging.getLogger(__name__)


class IntentConflict(Exception):
    """The intent cannot be applied without touching what is not the agent's (another local AS,
    an operator's outbound route-map); answered with 409 listing `conflicts`. Nothing changed."""

    def __init__(self, detail: str, conflicts: list[str]) -> None:
        super().__init__(detail)
        self.conflicts = conflicts


PolicySource = Callable[[], "policy.Policy | None"]
"""Returns the policy in force (None: --lab, no file); raises PolicyViolation(POLICY_FILE) if unusable."""


@dataclass(frozen=True)
class Timing:
    verify_timeout: float = 10.0
    """How long the read-back may take; a new neighbor needs ~1-2 s to reach Established."""
    poll_interval: float = 0.02
    health_interval: float = 1.0
    """/v1/health needs no token: its answer is reused this long, so a storm of calls runs
    vtysh at most once per interval (single flight: callers during a check share its result)."""


@dataclass(frozen=True)
class OwnConfig:
    """The agent's own writes to FRR so far and the running config's hash right after the last."""

    writes: int = 0
    config_hash: str | None = None


def _no_policy() -> policy.Policy | None:
    return None


class IntentService:
    def __init__(
        self,
        frr: FrrPort,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.monotonic,
        policy_source: PolicySource = _no_policy,
    ) -> None:
        self.frr = frr
        self.timing = timing
        self.clock = clock
        self.policy_source = policy_source
        self._lock = asyncio.Lock()  # concurrent intents are applied one after another
        self.apply_lock = self._lock  # nva_agent.change_reports reads FRR under it
        self.own = OwnConfig()  # what the agent itself last wrote (the change watcher compares with it)
        self._health_lock = asyncio.Lock()
        self._health: tuple[float, FrrError | None] | None = None

    async def health(self) -> None:
        """Raises FrrError unless bgpd answers through vtysh; at most one vtysh per health_interval."""
        async with self._health_lock:  # single flight: a caller waiting here gets the fresh result
            cached = self._health
            if cached is None or self.clock() - cached[0] >= self.timing.health_interval:
                try:
                    await self.frr.show_json(BGP_SUMMARY)
                    cached = (self.clock(), None)
                except FrrError as exc:
                    cached = (self.clock(), exc)
                self._health = cached
        if cached[1] is not None:
            raise cached[1]

    async def state(self, running: str | None = None, config_hash: str | None = None) -> AgentState:
        summary = await self.frr.show_json(BGP_SUMMARY)
        peers = list(state.summary_peers(summary))
        # peers come from FRR's own JSON keys; they are still only ever passed as one argv entry
        outputs = await asyncio.gather(
            *(self.frr.show_json(f"show bgp ipv4 unicast neighbors {ip} advertised-routes json") for ip in peers)
        )
        if config_hash is None:
            if running is None:
                running = await self.frr.running_config()
            config_hash = render.config_hash(running)
        return state.build_state(summary, dict(zip(peers, outputs, strict=True)), config_hash)

    async def apply(self, intent: BgpIntent) -> IntentResult:
        # Before any FRR call: an intent outside the NVA's own policy is refused with FRR untouched.
        policy.check(self.policy_source(), intent)
        async with self._lock:
            return await self._apply(intent)

    async def _written(self) -> None:
        """Right after the agent's own reload (or restore): hash the config it left, so a change
        made after it, even within the watcher's next second, is told apart as "outside"."""
        self.own = OwnConfig(self.own.writes + 1, render.config_hash(await self.frr.running_config()))

    async def _apply(self, intent: BgpIntent) -> IntentResult:
        # bgpd first: with bgpd down, vtysh still prints a running config, just without
        # `router bgp`; rendering from that would rebuild BGP from nothing.
        await self.frr.show_json(BGP_SUMMARY)
        running = await self.frr.running_config()
        try:
            candidate = render.render(running, intent)
        except render.AsnMismatch as exc:
            raise IntentConflict(str(exc), [f"router bgp {exc.running}"]) from exc
        except render.OutboundConflict as exc:
            raise IntentConflict(str(exc), exc.conflicts) from exc
        changes = render.changes(render.parse(running), render.parse(candidate))

        def result(applied: bool, rolled_back: bool, now: AgentState, message: str) -> IntentResult:
            return IntentResult(
                changed=bool(changes),
                applied=applied,
                rolled_back=rolled_back,
                dry_run=intent.dry_run,
                changes=changes,
                state=now,
                message=message,
            )

        if not changes:
            now = await self.state(running)
            issues = state.problems(now, intent)
            msg = "config already matches the intent; nothing applied"
            return result(False, False, now, msg + (f"; read-back: {'; '.join(issues)}" if issues else ""))
        try:
            await self.frr.check(candidate)
        except ConfigRejected as exc:
            return result(False, False, await self.state(running), f"rendered config rejected, nothing applied: {exc}")
        if intent.dry_run:
            msg = f"dry run: {len(changes)} change(s) validated with vtysh -C; nothing applied"
            return result(False, False, await self.state(running), msg)

        previous = render.canonical(running)
        t0 = self.clock()
        try:
            await self.frr.reload(candidate)
            t1 = self.clock()
            await self.frr.soft_out()
        except FrrError as exc:
            await self._restore(previous)
            return result(False, True, await self.state(), f"apply failed ({exc}); previous config restored")
        t2 = self.clock()
        await self._written()  # an FrrError here is a 503, as in the read-back: FRR stopped answering
        now, issues = await self._read_back(intent)
        log.info(
            "intent: %d change(s); reload %.0f ms, soft clear %.0f ms, read-back %.0f ms%s",
            len(changes), (t1 - t0) * 1000, (t2 - t1) * 1000, (self.clock() - t2) * 1000,
            f"; not verified: {'; '.join(issues)}" if issues else "",
        )  # fmt: skip
        if issues:
            await self._restore(previous)
            msg = (
                f"read-back did not match within {self.timing.verify_timeout:.1f} s ({'; '.join(issues)}); "
                "previous config restored"
            )
            return result(False, True, await self.state(), msg)
        return result(True, False, now, f"applied {len(changes)} change(s); every neighbor advertises the intent")

    async def _read_back(self, intent: BgpIntent) -> tuple[AgentState, list[str]]:
        deadline = self.clock() + self.timing.verify_timeout
        placeholder = "sha256:" + "0" * 64  # the config is read once, after the routes match
        while True:
            now = await self.state(config_hash=placeholder)
            issues = state.problems(now, intent)
            if not issues or self.clock() >= deadline:
                final = render.config_hash(await self.frr.running_config())
                return now.model_copy(update={"config_hash": final}), issues
            await asyncio.sleep(self.timing.poll_interval)

    async def _restore(self, previous: str) -> None:
        # A failure here leaves FRR in an unknown state: let FrrError reach the caller (503).
        await self.frr.reload(previous)
        await self.frr.soft_out()
        await self._written()
