"""The demo's event-driven part: breaks repaired within seconds with "changed by" shown, and the
timer still catching a change whose event was lost.

Owns that part of the story only. Runs the Functions app's own function objects on the local host
(Event Grid webhook, agent change reports, the fan-out queue pumped as the host does), with the
emulator publishing Event Grid events and the emulated agent reporting FRR changes. It must not
reach around the app: every repair it shows is the app's own functions at work.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, TextIO

from emulator import ArmEmulator
from emulator.agent_reports import AgentReporter
from emulator.events import ALICE, RECONCILER, EventPublisher
from localenv import scenarios
from localenv.azurite import Azurite

NET = f"/subscriptions/{scenarios.SUB}/resourceGroups/{scenarios.RG}/providers/Microsoft.Network"
DELIVERY_DELAY_S = 1.0


@contextlib.contextmanager
def app_host(
    storage_connection: str, key: str | None = None, *, pump_queues: bool = False
) -> Iterator[tuple[Any, Any]]:
    """(LocalHost, function_app): the Functions app's own function objects on the local host, with a
    worker and an event intake built from the app settings now in the environment. The fan-out
    queue is pumped when the caller drains it (`host.drain()`), or all the time with `pump_queues`,
    as the host would. The app module may have been imported before (a test session): its worker,
    settings and event intake are pointed at these settings and put back on exit, so nothing that
    runs later sees another run's queue names."""
    from localenv.host import LocalHost, functions, load_app, trigger
    from reconciler.composition import Worker
    from reconciler.event_intake import EventIntake
    from reconciler.fanout import poison_queue

    fa = load_app()
    saved = (fa.WORKER, fa.SETTINGS, fa.EVENTS)
    fa.WORKER = Worker.from_environment(fa.APP_ROOT)
    fa.SETTINGS = fa.WORKER.settings
    fa.EVENTS = EventIntake(fa.SETTINGS)
    bound = trigger(functions(fa.app)["reconcile_queue"])["queueName"]
    q = fa.SETTINGS.fanout_queue

    async def close() -> None:
        await fa.EVENTS.aclose()
        await fa.WORKER.aclose()

    host = LocalHost(fa.app, storage_connection=storage_connection, key=key, on_close=close,
                     queue_names={bound: q, poison_queue(bound): poison_queue(q)})  # fmt: skip
    try:
        with host.start(pump_queues=pump_queues):
            yield host, fa
    finally:
        fa.WORKER, fa.SETTINGS, fa.EVENTS = saved


def events_demo(emu: ArmEmulator, az: Azurite, out: TextIO) -> int:
    """Needs the app settings already in the environment (the demo's HTTP part sets them)."""
    print("\n== Seconds, not minutes: event-driven passes and who changed what", file=out)
    os.environ["ARS_EVENT_OWN_IDS"] = RECONCILER.app_id  # the reconciler's own calls start nothing
    problems = 0
    with app_host(az.connection_string) as (host, fa):
        pub = EventPublisher(f"{host.url}/runtime/webhooks/eventgrid?functionName=reconcile_event",
                             delay_s=DELIVERY_DELAY_S)  # fmt: skip
        emu.events = pub
        reporter = AgentReporter(emu, f"{host.url}/api/agent/changes", period_s=1.0)
        rt = host.run(fa.WORKER.runtime())
        try:
            print(f"  Event Grid delivers {DELIVERY_DELAY_S:.0f} s after a change; the agent looks at FRR every 1 s;"
                  f" a pass waits {fa.SETTINGS.event_settle:.0f} s for the burst to land", file=out)  # fmt: skip

            t0 = time.monotonic()
            with emu.world.lock:
                fw = emu.world.firewall(scenarios.SUB, scenarios.RG, scenarios.FW)
                old, fw.private_ip = fw.private_ip, "10.0.3.6"
            print(f"\n  break: {ALICE.upn} redeploys Azure Firewall: its private IP moves {old} -> 10.0.3.6", file=out)
            print("         (ARM publishes the write; the NVA still points at the old IP)", file=out)
            pub.publish(f"{NET}/azureFirewalls/{scenarios.FW}", "write", caller=ALICE)
            problems += _await(host, rt, t0, "ROUTE_NEXT_HOP_WRONG", "resolved", out)

            t0 = time.monotonic()
            print(f"\n  break: {scenarios.default_route_withdrawn(emu)} (a vtysh edit: no ARM event)", file=out)
            problems += _await(host, rt, t0, "ROUTE_MISSING", "resolved", out)

            t0 = time.monotonic()
            pub.drop_next()
            print(f"\n  break: {scenarios.branch_to_branch_off(emu)}, and its event is lost in transit", file=out)
            pub.publish(f"{NET}/virtualHubs/{scenarios.RS}", "write", caller=ALICE)
            time.sleep(fa.SETTINGS.event_settle + DELIVERY_DELAY_S + 2)
            host.drain(deadline_s=30)
            seen = "BRANCH_TO_BRANCH_DISABLED" in _open(host, rt)
            print(f"  {time.monotonic() - t0:5.1f} s  no event arrived: nothing noticed yet" if not seen
                  else "  unexpected: noticed without an event", file=out)  # fmt: skip
            problems += int(seen)
            print("  the timer ticks (the safety net):", file=out)
            host.fire_timer()
            found = {d.code: d for d in host.run(rt.ledger.open_drifts(target="hub-weu"))}
            if "BRANCH_TO_BRANCH_DISABLED" in found:
                who = found["BRANCH_TO_BRANCH_DISABLED"].changed_by
                print(f"  {time.monotonic() - t0:5.1f} s  drift recorded by the timer pass: BRANCH_TO_BRANCH_DISABLED"
                      f" (a human fixes it) — changed by {who.describe() if who else 'unknown'}", file=out)  # fmt: skip
            else:
                print("  unexpected: the timer pass did not record BRANCH_TO_BRANCH_DISABLED", file=out)
                problems += 1
            with emu.world.lock:
                emu.world.route_server(scenarios.SUB, scenarios.RG, scenarios.RS).branch_to_branch = True
            counts = {v.value: n for v, n in fa.EVENTS.counts.items()}
            print(f"\n  events and reports seen: {counts} (self = the reconciler's own ARM calls and fixes)", file=out)
        finally:
            emu.events = None
            reporter.close()
            pub.close()
    return problems


def _open(host: Any, rt: Any) -> set[str]:
    return {d.code for d in host.run(rt.ledger.open_drifts(target="hub-weu"))}


def _await(host: Any, rt: Any, t0: float, code: str, kind: str, out: TextIO, timeout: float = 30.0) -> int:
    """Pump the queue like the host until `code` reaches `kind` in the ledger; print when and who."""
    shown: set[str] = set()
    since = time.time() - (time.monotonic() - t0)  # the break, on the wall clock the ledger uses
    while time.monotonic() - t0 < timeout:
        host.drain(deadline_s=30)
        rows = host.run(rt.ledger.history(target="hub-weu", limit=30))
        for h in sorted(rows, key=lambda r: (r["at"], r["kind"] != "opened")):
            if h.get("code") != code or h["kind"] in shown or h["at"].timestamp() < since:
                continue
            shown.add(h["kind"])
            who = f" — changed by {h['changed_by']}" if h.get("changed_by") else ""
            print(f"  {time.monotonic() - t0:5.1f} s  {code} {h['kind']}{who}", file=out)
        if kind in shown:
            return 0
        time.sleep(0.1)
    print(f"  unexpected: {code} not {kind} within {timeout:.0f} s", file=out)
    return 1


class LabReaction:
    """`demo --lab`: after each break of the real NVA the story reacts instead of racing BGP.

    It waits (each with a deadline) for the agent's signed change report to be accepted by the
    app's `POST /api/agent/changes`, then for the route servers to show the change, and only then
    plans; the repair is the targeted pass that report queued, run by the host's queue pump.
    """

    def __init__(self, host: Any, fa: Any, lab: Any, timeout_s: float = 20.0) -> None:
        self.host, self.fa, self.lab, self.timeout_s = host, fa, lab, timeout_s
        self.t0 = time.monotonic()
        self._accepted = 0
        self._before: tuple[Any, ...] = ()

    def _seen(self) -> tuple[Any, ...]:
        return tuple(self.lab.best(rs).get("0.0.0.0/0") for rs in (0, 1))

    def start(self) -> None:
        """Just before the break: remember what the route servers hold and the reports so far."""
        from reconciler.events import Verdict

        self.t0 = time.monotonic()
        self._accepted = self.fa.EVENTS.counts[Verdict.ACCEPTED]
        self._before = self._seen()

    async def noticed(self, out: TextIO) -> int:
        """Wait for the report and for BGP to carry the change; 1 (a problem) if either never came."""
        import asyncio

        from reconciler.events import Verdict

        deadline = self.t0 + self.timeout_s
        while self.fa.EVENTS.counts[Verdict.ACCEPTED] <= self._accepted:
            if time.monotonic() > deadline:
                print(f"  unexpected: no change report accepted within {self.timeout_s:.0f} s", file=out)
                return 1
            await asyncio.sleep(0.05)
        print(f"  {time.monotonic() - self.t0:5.1f} s  the agent's signed change report was accepted "
              "(POST /api/agent/changes): a targeted pass is queued", file=out)  # fmt: skip
        while (seen := self._seen()) == self._before:
            if time.monotonic() > deadline:
                print(f"  unexpected: the route servers still hold {_routes(seen)} after {self.timeout_s:.0f} s",
                      file=out)  # fmt: skip
                return 1
            await asyncio.sleep(0.05)
        print(f"  {time.monotonic() - self.t0:5.1f} s  BGP carried it: the route servers now hold {_routes(seen)}",
              file=out)  # fmt: skip
        return 0

    async def repaired(self, out: TextIO, ledger: Any) -> int:
        """Run the queued targeted pass(es) (the host's queue pump) and show what they recorded."""
        import asyncio

        await asyncio.to_thread(self.host.drain, 60.0)
        since = time.time() - (time.monotonic() - self.t0)
        recent = await ledger.passes(limit=10)
        passes = [p for p in recent if p.trigger == "event" and p.started_at.timestamp() >= since]
        if not passes:
            print("  unexpected: no event pass ran", file=out)
            return 1
        history = await ledger.history(target="hub-weu", limit=100)
        for p in sorted(passes, key=lambda p: p.started_at):
            counts = dict(p.counts)
            at = p.started_at.timestamp() + p.duration_s - since
            print(f"  {at:5.1f} s  the targeted pass {p.pass_id} (trigger event) ended: "
                  f"{counts.get('drifts', 0)} drift(s), {counts.get('fixed', 0)} fixed, "
                  f"{counts.get('remaining', 0)} remaining", file=out)  # fmt: skip
            rows = [h for h in history if h.get("pass_id") == p.pass_id]
            for h in sorted(rows, key=lambda r: ("opened", "action", "resolved").index(str(r["kind"]))
                            if r["kind"] in ("opened", "action", "resolved") else 3):  # fmt: skip
                if h["kind"] == "action":
                    line = f"{h.get('identity')}: {h.get('action', '')} -> {h.get('outcome', '')}"
                else:
                    who = f" — changed by {h['changed_by']}" if h.get("changed_by") and h["kind"] == "opened" else ""
                    line = f"{h.get('code', '')} {h.get('subject', '')}: {h['kind']}{who}"
                print(f"           {line}", file=out)
        last = dict(sorted(passes, key=lambda p: p.started_at)[-1].counts)
        fixed = sum(dict(p.counts).get("fixed", 0) for p in passes)
        if fixed < 1 or last.get("remaining"):
            print("  unexpected: the event pass did not find and fix the drift", file=out)
            return 1
        return 0


def _routes(seen: tuple[Any, ...]) -> str:
    parts = []
    for i, r in enumerate(seen):
        held = f"0.0.0.0/0 via {r['next_hop']} (AS path {r['as_path']})" if r else "no 0.0.0.0/0"
        parts.append(f"route server {i}: {held}")
    return "; ".join(parts)
