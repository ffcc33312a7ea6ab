"""Time to repair: how long from a break to the drift recorded, the fix verified, the card sent,
with event-driven passes and with the timer alone, on the same timer schedule.

    python -m bench.time_to_repair                  # 5 repetitions of each break, both modes
    python -m bench.time_to_repair --smoke          # 1 repetition of two breaks (the test suite's)
    python -m bench.time_to_repair --lab            # the NVA-side breaks on real FRR (root, Debian frr)

Everything runs locally and for real: the ARM emulator (publishing Event Grid events after
`--delivery-delay` seconds), the emulated NVA agent (reporting FRR changes it did not make, polling
every `--agent-poll` seconds), Azurite, a Teams webhook receiver, and the Functions app's own
function objects on the local host (Event Grid webhook, HTTP, the fan-out queue pumped as the host
does, the timer fired every `--interval` seconds at a fixed phase). Each break is made, measured,
then healed (and the ledger seen clean) before the next one.

`--lab`: the NVA is real FRR in network namespaces (localenv.frrlab) with the real agent, and the
emulator answers the Route Server's learned routes from what the two FRR route servers received.
The breaks are what an operator types into vtysh (the firewall move stays an ARM change); with
events the agent started with change reports (through the lab's relay to the local host), timer
only a second agent without them, so nothing but the timer notices.

Measured per break (wall clock, polling every 50 ms):
  drift   break -> the first "opened" row in the ledger since the break (any code: the heal left
          the ledger clean, and which code is seen first depends on timing)
  fixed   break -> every drift opened since the break has its "resolved" row (NVA-side breaks: the
          agent's fix, verified by re-observing)
  card    break -> a Teams card naming the break's usual code reached the webhook (human-only
          drift; hold-down 0)
Owns nothing the product uses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator import ArmEmulator, BgpConnection, Route, World
from emulator.agent_reports import AgentReporter
from emulator.events import ALICE, EventPublisher
from localenv import scenarios
from localenv.azurite import Azurite
from localenv.demo_world import EXAMPLE, TOKEN_SETTING, WORLD, demo_desired, demo_env
from localenv.webhook import WebhookReceiver
from reconciler.trigger import Trigger

OUT = Path(__file__).resolve().parent / "results"
SUB, RG = scenarios.SUB, scenarios.RG
NET = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network"
HUB = f"{NET}/virtualHubs/{scenarios.RS}"


@dataclass(frozen=True)
class Break:
    name: str
    side: str  # nva | azure
    code: str  # the drift it must open
    make: Callable[[ArmEmulator, EventPublisher | None], None]
    heal: Callable[[ArmEmulator], None]
    measure: tuple[str, ...]  # drift, fixed, card


def _event(pub: EventPublisher | None, resource: str, kind: str) -> None:
    if pub is not None:
        pub.publish(resource, kind, caller=ALICE)


def _nva_heal(emu: ArmEmulator) -> None:
    pass  # the next pass's agent fix heals the NVA side


def _nva(scenario: Callable[[ArmEmulator], str]) -> Callable[[ArmEmulator, EventPublisher | None], None]:
    # An edit on the NVA raises no ARM event: the (emulated) agent notices it and reports it.
    def make(emu: ArmEmulator, pub: EventPublisher | None) -> None:
        scenario(emu)

    return make


def _b2b_off(emu: ArmEmulator, pub: EventPublisher | None) -> None:
    scenarios.branch_to_branch_off(emu)
    _event(pub, HUB, "write")


def _b2b_heal(emu: ArmEmulator) -> None:
    with emu.world.lock:
        emu.world.route_server(SUB, RG, scenarios.RS).branch_to_branch = True


def _conn_delete(emu: ArmEmulator, pub: EventPublisher | None) -> None:
    with emu.world.lock:
        rs = emu.world.route_server(SUB, RG, scenarios.RS)
        rs.connections = [c for c in rs.connections if c.name != "nva1"]
    _event(pub, f"{HUB}/bgpConnections/nva1", "delete")


def _conn_heal(emu: ArmEmulator) -> None:
    with emu.world.lock:
        rs = emu.world.route_server(SUB, RG, scenarios.RS)
        if rs.connection("nva1") is None:
            rs.connections.append(BgpConnection("nva1", scenarios.NVA_IP, 65001, connected_instances=[0, 1]))


def _udr_remove(emu: ArmEmulator, pub: EventPublisher | None) -> None:
    with emu.world.lock:
        emu.world.route_table(SUB, RG, "fw-rt").routes = []
    _event(pub, f"{NET}/routeTables/fw-rt/routes/default-internet", "delete")


def _udr_heal(emu: ArmEmulator) -> None:
    with emu.world.lock:
        emu.world.route_table(SUB, RG, "fw-rt").routes = [Route("default-internet", "0.0.0.0/0", "Internet")]


def _fw_change(emu: ArmEmulator, pub: EventPublisher | None) -> None:
    scenarios.firewall_redeployed(emu)
    _event(pub, f"{NET}/azureFirewalls/{scenarios.FW}", "write")


def _fw_heal(emu: ArmEmulator) -> None:
    with emu.world.lock:
        emu.world.firewall(SUB, RG, scenarios.FW).private_ip = "10.0.3.4"


BREAKS: dict[str, Break] = {
    b.name: b
    for b in (
        Break("next-hop-lost", "nva", "ROUTE_NEXT_HOP_WRONG", _nva(scenarios.next_hop_not_set), _nva_heal,
              ("drift", "fixed")),
        Break("neighbour-removed", "nva", "PEER_DOWN", _nva(scenarios.instance_lost_peering), _nva_heal,
              ("drift", "fixed")),
        Break("network-statement-removed", "nva", "ROUTE_MISSING", _nva(scenarios.default_route_withdrawn), _nva_heal,
              ("drift", "fixed")),
        Break("firewall-ip-changed", "nva", "ROUTE_NEXT_HOP_WRONG", _fw_change, _fw_heal, ("drift", "fixed")),
        Break("branch-to-branch-off", "azure", "BRANCH_TO_BRANCH_DISABLED", _b2b_off, _b2b_heal, ("drift", "card")),
        Break("bgp-connection-deleted", "azure", "PEER_MISSING", _conn_delete, _conn_heal, ("drift", "card")),
        Break("udr-removed", "azure", "UDR_INVARIANT_BROKEN", _udr_remove, _udr_heal, ("drift", "card")),
    )
}  # fmt: skip
SMOKE = ("next-hop-lost", "branch-to-branch-off")
LAB = ("next-hop-lost", "neighbour-removed", "network-statement-removed", "firewall-ip-changed")
LAB_SMOKE = ("next-hop-lost",)


def _fw_ip(emu: ArmEmulator) -> str:
    with emu.world.lock:
        return str(emu.world.firewall(SUB, RG, scenarios.FW).private_ip)


def lab_breaks(lab: Any) -> dict[str, Break]:
    """The NVA-side breaks on real FRR: each one vtysh edit, as an operator would type it."""
    asn = lab.addr.nva_asn

    def vtysh(*commands: str) -> Callable[[ArmEmulator, EventPublisher | None], None]:
        def make(emu: ArmEmulator, pub: EventPublisher | None) -> None:
            lab.vtysh("nva", "configure terminal", *(c.format(fw=_fw_ip(emu)) for c in commands), "end",
                      "clear bgp ipv4 unicast * soft out")  # fmt: skip

        return make

    originate = "no network 0.0.0.0/0 route-map nva-agent-originate"
    made = {
        "next-hop-lost": vtysh("route-map nva-agent-ars-out permit 10", "no set ip next-hop {fw}"),
        "neighbour-removed": vtysh(f"router bgp {asn}", f"no neighbor {lab.addr.rs_ips[1]}"),
        "network-statement-removed": vtysh(f"router bgp {asn}", "address-family ipv4 unicast", originate),
    }
    return {n: (dataclasses.replace(BREAKS[n], make=made[n]) if n in made else BREAKS[n]) for n in LAB}


class Rig:
    """The local world, the app on the local host, and the probes the bench reads."""

    def __init__(
        self, tmp: Path, delivery_delay: float, agent_poll: float, interval: float, lab: Any = None
    ) -> None:
        self.tmp, self.delivery_delay, self.agent_poll, self.interval = tmp, delivery_delay, agent_poll, interval
        self.lab = lab  # localenv.frrlab.FrrLab (up) for --lab
        self.doc = tmp / "desired.json"
        self.quiet: Any = None  # --lab: the agent without change reports (timer only)
        self.reporting: Any = None  # --lab: the agent with them (events)

    def _desired(self, agent_url: str) -> None:
        """--lab: the example document with the NVA at the lab's address and `agent_url`'s agent."""
        import yaml

        doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        doc["targets"][0]["peers"][0].update(
            ip=self.lab.addr.nva_ip, agent_url=agent_url, token_setting=TOKEN_SETTING, agent_lab=True
        )
        self.doc.write_text(json.dumps(doc))  # the worker re-reads it when its mtime changes

    def __enter__(self) -> Rig:
        world = World.load(WORLD)
        if self.lab is not None:
            scenarios.nva_at(world, self.lab.addr.nva_ip)
        self.emu = ArmEmulator(world).start()
        self.az = Azurite().__enter__()
        self.hook = WebhookReceiver().__enter__()
        if self.lab is not None:
            from localenv.frrlab import strong_token

            self.emu.set_learned_source(self.lab.addr.nva_ip, self.lab.learned_routes)
            token = strong_token()
            self.quiet = self.lab.start_agent(token=token)
            self._desired(self.quiet.url)
        else:
            token = world.nva(scenarios.NVA_IP).agent_token
            self.doc.write_text(demo_desired(self.emu).model_dump_json())
        self._environ = dict(os.environ)
        os.environ.update(
            {
                **demo_env(self.emu, self.az.connection_string, self.hook.url),
                "ARS_DESIRED_STATE": str(self.doc),
                TOKEN_SETTING: token,
                "ARS_AGENT_TIMEOUT": "30",
                "ARS_TABLE_PREFIX": "ttr",
                "ARS_FANOUT_QUEUE": "ttr-reconcile",
                "ARS_EVENT_OWN_IDS": "a1b2c3d4-0000-4000-8000-00000000ec01",  # emulator.events.RECONCILER
            }
        )
        from localenv.demo_events import app_host

        self._app = contextlib.ExitStack()
        self.host, self.fa = self._app.enter_context(app_host(self.az.connection_string, pump_queues=True))
        self.rt = self.host.run(self.fa.WORKER.runtime())
        self._last_measured = 0.0
        self.rng = random.Random(16)
        self.pub: EventPublisher | None = None
        self.reporter: AgentReporter | None = None
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="timer", daemon=True)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._timer.join(timeout=30)
        self.events(False)
        self._app.close()  # stops the host and puts the app module's state back
        os.environ.clear()
        os.environ.update(self._environ)
        self.hook.__exit__()
        self.az.__exit__(None, None, None)
        self.emu.stop()

    def _tick(self) -> None:
        # A timer at a fixed phase, like NCRONTAB: the break lands at a random point of its period.
        nxt = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, nxt - time.monotonic())):
            nxt += self.interval
            try:
                self.host.fire_timer()
            except Exception as exc:  # a failed tick is a missed tick, as in Azure
                print(f"timer: {exc}", file=sys.stderr)

    def events(self, on: bool) -> None:
        """Attach (or detach) Event Grid delivery and the agent's change reports."""
        if on and self.pub is None:
            url = f"{self.host.url}/runtime/webhooks/eventgrid?functionName=reconcile_event"
            self.pub = EventPublisher(url, delay_s=self.delivery_delay)
            self.emu.events = self.pub
            reports = f"{self.host.url}/api/agent/changes"
            if self.lab is None:
                self.reporter = AgentReporter(self.emu, reports, period_s=self.agent_poll)
            else:  # the real agent, reporting through the lab's relay; the reconciler fixes through it
                self.reporting = self.lab.start_agent(token=self.quiet.token, report_to=reports)
                self._desired(self.reporting.url)
        if not on and self.pub is not None:
            self.emu.events = None
            self.pub.close()
            if self.reporter is not None:
                self.reporter.close()
            if self.reporting is not None:
                self._desired(self.quiet.url)
                self.reporting.stop()
                self.lab.agents.remove(self.reporting)
            self.pub = self.reporter = self.reporting = None

    def history(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.host.run(self.rt.ledger.history(target="hub-weu", limit=50))
        return rows

    def open_codes(self) -> set[str]:
        return {d.code for d in self.host.run(self.rt.ledger.open_drifts(target="hub-weu"))}

    def heal(self, b: Break, events_on: bool) -> None:
        self.events(False)  # the heal is not a break: no events, no reports
        for each in BREAKS.values():  # the last repetition of the previous kind is still broken
            each.heal(self.emu)
        # Breaks a few seconds apart would measure the rate bound (one event pass per target per
        # ARS_EVENT_MIN_INTERVAL), not the reaction: leave that interval since the last event pass
        # (which ran before the last measurement ended).
        time.sleep(max(0.0, self.fa.SETTINGS.event_min_interval - (time.monotonic() - self._last_measured)))
        # Each repetition is a first-time break for alerting too: without this, the alert machine's
        # flap detection (6 presence changes an hour) rightly mutes the cards from the 4th repetition.
        self._forget_alerts()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.host.run(self._pass())
            if not self.open_codes():
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{b.name}: not healed within 60 s: {sorted(self.open_codes())}")
        self.events(events_on)

    async def _pass(self) -> None:
        from reconciler.service import reconcile

        assert self.rt.services is not None
        await reconcile(self.rt.services, self.fa.WORKER.desired(), trigger=Trigger.HTTP)

    def measure(self, b: Break, timeout: float) -> dict[str, Any]:
        # A break lands at a random point of the timer's period (not just after the heal's tick).
        time.sleep(self.rng.uniform(0, self.interval))
        cards_before = len(self.hook.accepted())
        t0 = time.time()
        b.make(self.emu, self.pub)
        got: dict[str, Any] = {m: None for m in b.measure}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(got[m] is None for m in b.measure):
            # Any drift opened since the break is the break's: the heal left the ledger clean. Which
            # code comes first depends on timing (a neighbour removed shows as routes missing on one
            # instance before its session is seen down), so `b.code` only names the usual one.
            rows = [h for h in self.history() if h["at"].timestamp() >= t0]
            opened = {h["identity"] for h in rows if h["kind"] == "opened"}
            resolved = {h["identity"] for h in rows if h["kind"] == "resolved"}
            if got.get("drift", 0) is None and opened:
                got["drift"] = time.time() - t0
            if got.get("fixed", 0) is None and opened and opened <= resolved:
                got["fixed"] = time.time() - t0
            cards = self.hook.accepted()[cards_before:]
            if got.get("card", 0) is None and any(b.code in r.body.decode() for r in cards):
                got["card"] = time.time() - t0
            time.sleep(0.05)
        got["codes"] = sorted({h["code"] for h in rows if h["kind"] == "opened"})
        self._last_measured = time.monotonic()
        return got

    def _forget_alerts(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableClient

        name = f"{self.fa.SETTINGS.table_prefix}alertstate"
        table = TableClient.from_connection_string(self.az.connection_string, name)
        with table:
            try:
                for row in list(table.list_entities()):
                    table.delete_entity(row["PartitionKey"], row["RowKey"])
            except ResourceNotFoundError:
                pass  # no alert has been decided yet


def summarise(samples: list[float | None]) -> dict[str, Any]:
    seen = sorted(s for s in samples if s is not None)
    if not seen:
        return {"n": len(samples), "missed": len(samples), "p50": None, "p95": None}
    p95 = seen[min(len(seen) - 1, round(0.95 * (len(seen) - 1)))]
    return {"n": len(samples), "missed": len(samples) - len(seen), "p50": round(statistics.median(seen), 2),
            "p95": round(p95, 2), "max": round(seen[-1], 2)}  # fmt: skip


def run(
    names: tuple[str, ...], reps: int, modes: tuple[str, ...], rig: Rig, timeout: float,
    breaks: dict[str, Break] = BREAKS,
) -> dict[str, Any]:
    raw: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    seen: dict[str, dict[str, list[list[str]]]] = {}  # the drift codes each repetition opened
    for mode in modes:
        for name in names:
            b = breaks[name]
            for i in range(reps):
                rig.heal(b, mode == "events")
                got = rig.measure(b, timeout)
                codes = got.pop("codes")
                seen.setdefault(name, {}).setdefault(mode, []).append(codes)
                for m, v in got.items():
                    raw.setdefault(name, {}).setdefault(mode, {}).setdefault(m, []).append(v)
                shown = ", ".join(f"{m} {v:.2f} s" if v is not None else f"{m} missed" for m, v in got.items())
                print(f"  {mode:6} {name:26} #{i + 1}: {shown} ({', '.join(codes) or 'no drift'})", flush=True)
        rig.heal(BREAKS[names[-1]], False)
    results: dict[str, Any] = {}
    for name, by_mode in raw.items():
        row: dict[str, Any] = {"side": BREAKS[name].side, "code": BREAKS[name].code}
        for mode, by_metric in by_mode.items():
            row[mode] = {m: summarise(v) | {"samples": [None if x is None else round(x, 3) for x in v]}
                         for m, v in by_metric.items()}  # fmt: skip
            row.setdefault("codes_opened", {})[mode] = seen[name][mode]
        if "events" in row and "timer" in row:
            row["ratio_p50"] = {
                m: round(row["timer"][m]["p50"] / row["events"][m]["p50"], 1)
                for m in row["events"]
                if row["events"][m]["p50"] and row["timer"].get(m, {}).get("p50")
            }
        results[name] = row
    return results


def readme_table(results: dict[str, Any], cfg: dict[str, Any]) -> str:
    lines = [
        f"Timer every {cfg['interval']} s in both modes; Event Grid delivery delay {cfg['delivery_delay']} s; "
        f"agent polls FRR every {cfg['agent_poll']} s; settle {cfg['settle']} s after an ARM event, "
        f"{cfg['report_settle']} s after an agent's report; queue polled at least every "
        f"{cfg['max_polling_interval']} s when idle; {cfg['reps']} repetitions.",
        "",
        "| break | side | measured | events p50 / p95 (s) | timer only p50 / p95 (s) | ratio (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        for m in row.get("events", row.get("timer", {})):
            ev, tm = row.get("events", {}).get(m, {}), row.get("timer", {}).get(m, {})
            ratio = row.get("ratio_p50", {}).get(m, "–")
            lines.append(f"| {name} | {row['side']} | break → {m} | {_cell(ev)} | {_cell(tm)} | {ratio} |")
    return "\n".join(lines) + "\n"


def _cell(s: dict[str, Any]) -> str:
    if not s:
        return "–"
    missed = f" ({s['missed']} missed)" if s.get("missed") else ""
    return f"{s['p50']} / {s['p95']}{missed}"


def chart(results: dict[str, Any], path: Path, where: str = "emulator") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ev, tm = [], [], []
    for name, row in results.items():
        m = "fixed" if "fixed" in row.get("events", row.get("timer", {})) else "drift"
        labels.append(f"{name}\n(→ {m})")
        ev.append((row.get("events", {}).get(m) or {}).get("p50") or 0)
        tm.append((row.get("timer", {}).get(m) or {}).get("p50") or 0)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], ev, width=0.4, label="event-driven")
    ax.bar([i + 0.2 for i in x], tm, width=0.4, label="timer only")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("seconds after the break (p50)")
    ax.set_title(f"Time to repair ({where}): break → fixed (NVA side) / drift recorded (Azure side)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.time_to_repair", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="1 repetition of two breaks (--lab: one), short timer")
    p.add_argument("--lab", action="store_true", help="the NVA-side breaks on real FRR (root, Debian frr)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--interval", type=float, default=30.0, help="timer period, both modes (s)")
    p.add_argument("--delivery-delay", type=float, default=1.0, help="Event Grid delivery delay (s)")
    p.add_argument("--agent-poll", type=float, default=1.0, help="how often the agent looks at FRR (s)")
    p.add_argument("--modes", default="events,timer")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    smoke, every = (LAB_SMOKE, LAB) if args.lab else (SMOKE, tuple(BREAKS))
    names = smoke if args.smoke else every
    reps = 1 if args.smoke else args.reps
    interval = 4.0 if args.smoke else args.interval
    modes = tuple(args.modes.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "time_to_repair-lab" if args.lab else "time_to_repair"
    with contextlib.ExitStack() as stack:
        lab = None
        if args.lab:
            from localenv.frrlab import FrrLab, LabUnavailable

            lab = FrrLab(name=f"arsrttr{os.getpid()}")  # a test and a bench run may overlap
            try:
                lab.up()
            except LabUnavailable as exc:
                print(f"--lab needs root, Debian frr + frr-pythontools and network namespaces: {exc}", file=sys.stderr)
                return 77
            stack.callback(lab.down)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ttr-"))
        rig = stack.enter_context(Rig(Path(tmp), args.delivery_delay, args.agent_poll, interval, lab=lab))
        cfg = {"interval": interval, "delivery_delay": args.delivery_delay, "agent_poll": args.agent_poll,
               "settle": rig.fa.SETTINGS.event_settle, "report_settle": rig.fa.SETTINGS.report_settle,
               "min_interval": rig.fa.SETTINGS.event_min_interval,
               "max_polling_interval": rig.fa.QUEUE_RULES.max_polling_interval.total_seconds(),
               "reps": reps, "smoke": args.smoke, "lab": args.lab}  # fmt: skip
        breaks = lab_breaks(lab) if lab is not None else BREAKS
        results = run(names, reps, modes, rig, timeout=interval * 2 + 30, breaks=breaks)
    doc = {"config": cfg, "results": results}
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    (out / f"{stem}-table.md").write_text(readme_table(results, cfg))
    chart(results, out / f"{stem}.png", "real FRR" if args.lab else "emulator")
    print(readme_table(results, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
