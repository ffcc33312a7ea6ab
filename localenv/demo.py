"""The demo: emulated Azure + Azurite + an emulated NVA agent + a local Teams receiver, one story.

Owns the script of the story (healthy → broken in named ways → fixed → resolved in the ledger,
cards sent) and its command, `python -m localenv.demo [--lab] [--out DIR]` (`make demo`). Everything
it shows goes through the same service function as the Functions triggers: it must not hold
logic of the product (and the product never imports this module).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml

from emulator import ArmEmulator, World
from localenv import browser, scenarios
from localenv.azurite import Azurite
from localenv.demo_events import LabReaction, events_demo
from localenv.demo_world import EXAMPLE, TOKEN_SETTING, WORLD, demo_desired, demo_env
from localenv.webhook import WebhookReceiver
from reconciler import cards, desired
from reconciler.composition import Runtime
from reconciler.errors import ReconcilerError
from reconciler.picture import trace_svg
from reconciler.report_text import render_report, render_trace
from reconciler.service import reconcile, trace_targets
from reconciler.settings import load_settings
from reconciler.trace import worst
from reconciler.trigger import Trigger

Break = tuple[str, Callable[[], object]]


def run_demo(out_dir: Path, out: TextIO, lab: bool = False) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    if lab:
        return _run_lab_demo(out_dir, out)
    world = World.load(WORLD)
    nva_token = world.nva(scenarios.NVA_IP).agent_token
    with ArmEmulator(world) as emu, Azurite() as az, WebhookReceiver() as hook:
        os.environ[TOKEN_SETTING] = nva_token
        settings = load_settings(demo_env(emu, az.connection_string, hook.url))
        state = demo_desired(emu)
        breaks: list[Break] = [
            (scenarios.BREAKS[name].__doc__ or name, functools.partial(scenarios.BREAKS[name], emu))
            for name in ("instance-lost-peering", "next-hop-not-set")
        ]
        problems = asyncio.run(_story(emu, hook, settings, state, breaks, out_dir, out))
        problems += _http(emu, az, state, out, out_dir)
        problems += events_demo(emu, az, out)  # after _http: it uses the app settings _http set
    return _done(out, problems)


def _done(out: TextIO, problems: int) -> int:
    _say(out, "Done." if problems == 0 else f"Done, with {problems} unexpected result(s).")
    return 0 if problems == 0 else 1


def _http(emu: ArmEmulator, az: Azurite, state: desired.DesiredState, out: TextIO, out_dir: Path) -> int:
    """The Functions app's HTTP routes, served locally through the same function objects."""
    import httpx

    from localenv.host import LocalHost, load_app

    _say(out, "The Functions app over HTTP (localenv.host serves function_app's own function objects)")
    doc = Path(az.location) / "desired.json"
    doc.write_text(state.model_dump_json())
    os.environ.update({**demo_env(emu, az.connection_string), "ARS_DESIRED_STATE": str(doc)})
    fa = load_app()
    problems = 0
    with LocalHost(fa.app, storage_connection=az.connection_string, on_close=fa.WORKER.aclose) as host:
        print(f"  break: {scenarios.default_route_withdrawn(emu)}", file=out)
        calls = [
            ("POST", "/api/reconcile", {"dry_run": True}),
            ("POST", "/api/reconcile", {}),
            ("GET", "/api/drift", None),
            ("GET", "/api/health", None),
            ("GET", "/api/health/details", None),
            ("GET", "/api/trace?target=hub-weu", None),
            ("GET", "/api/reconcile", None),  # wrong method: the host routes by method, so 404
        ]
        for method, path, body in calls:
            data = f" -d '{json.dumps(body)}'" if body is not None else ""
            print(f"\n  $ curl -X {method} {host.url}{path}{data}", file=out)
            resp = httpx.request(method, host.url + path, json=body, timeout=60)
            print(f"  HTTP {resp.status_code}: {_summary(resp.json()) if resp.content else '(no body)'}", file=out)
            if resp.status_code >= 500:
                problems += 1
        if browser.chromium() is not None:
            shot = browser.screenshot(f"{host.url}/api/status", out_dir / "pictures" / "status-page.png", 1600, 1500)
            print(f"\n  status page (GET /api/status) in headless Chromium: {shot}", file=out)
    return problems


def _summary(body: Any) -> str:
    """A few telling fields of a response, so the demo output stays readable."""
    if isinstance(body, dict) and "pass_id" in body:
        parts = []
        for t in body["targets"]:
            steps = t.get("plan", {}).get("steps", [])
            outcomes = [o["outcome"] for o in t.get("outcomes", [])]
            parts.append(
                f"{t['target']}: {t['status']}, {len(t['drifts'])} drift(s), steps {steps}, outcomes {outcomes}"
            )
        return f"pass {body.get('pass_id')} dry_run={body.get('dry_run')} — " + "; ".join(parts)
    text = json.dumps(body)
    return text if len(text) < 300 else text[:297] + "..."


def _run_lab_demo(out_dir: Path, out: TextIO) -> int:
    """The same story, but the NVA is real FRR in a network namespace with the real agent, and the
    emulator answers the Route Server's learned routes from what two real FRR route servers got.

    The agent reports FRR changes (signed) to the Functions app served on the local host, through
    the lab's relay from its namespace; after each break the story waits for that report and for
    BGP to carry the change, and the repair is the targeted pass the report queued."""
    from localenv.demo_events import LabReaction, app_host
    from localenv.frrlab import FrrLab, LabUnavailable, nva_config, strong_token

    lab = FrrLab(name=f"arsrdemo{os.getpid()}")  # its own namespaces: a test run may overlap
    try:
        lab.up()
    except LabUnavailable as exc:
        print(f"demo --lab needs root, Debian frr + frr-pythontools and network namespaces: {exc}", file=out)
        return 1
    try:
        world = World.load(WORLD)
        scenarios.nva_at(world, lab.addr.nva_ip)
        with ArmEmulator(world) as emu, Azurite() as az, WebhookReceiver() as hook:
            emu.set_learned_source(lab.addr.nva_ip, lab.learned_routes)
            token = strong_token()
            doc_path = Path(az.location) / "desired-lab.json"
            env = demo_env(emu, az.connection_string, hook.url)
            env.update({"ARS_VERIFY_TIMEOUT": "20", "ARS_DESIRED_STATE": str(doc_path), TOKEN_SETTING: token})
            os.environ.update(env)

            def lab_state(agent_url: str) -> desired.DesiredState:
                doc = yaml.safe_load(EXAMPLE.read_text())
                doc["targets"][0]["peers"][0].update(
                    ip=lab.addr.nva_ip, agent_url=agent_url, token_setting=TOKEN_SETTING, agent_lab=True
                )
                doc_path.write_text(json.dumps(doc))
                return desired.parse(doc, str(EXAMPLE))

            lab_state("http://127.0.0.1:1")  # the app needs a document to start; the agent's URL follows
            with app_host(az.connection_string) as (host, fa):
                agent = lab.start_agent(token=token, report_to=f"{host.url}/api/agent/changes")
                state = lab_state(agent.url)

                def firewall_ip() -> str:
                    with emu.world.lock:  # the firewall moved earlier in the story: breaks keep its IP
                        return str(emu.world.firewall(scenarios.SUB, scenarios.RG, scenarios.FW).private_ip)

                def frr(text: str, **broken: Any) -> Break:
                    def do() -> object:
                        kw = {"next_hop": firewall_ip(), **broken}
                        lab.load_nva_config(nva_config(lab.addr, **kw))
                        return text
                    return text, do

                breaks = [
                    frr(
                        "FRR: a route-map edit lost `set ip next-hop` (routes arrive with the NVA's own address)",
                        next_hop=None,
                    ),
                    frr("FRR: the neighbor to route server 10.0.2.5 was removed", neighbors=(lab.addr.rs_ips[0],)),
                    frr("FRR: `network 0.0.0.0/0` was removed", announce=False),
                ]
                react = LabReaction(host, fa, lab)
                problems = asyncio.run(_story(emu, hook, load_settings(env), state, breaks, out_dir, out, react))
                return _done(out, problems)
    finally:
        lab.down()


async def _trace(svc: Any, state: desired.DesiredState, out: TextIO, picture: Path) -> str:
    """Print the trace of every target and save the first one's picture (SVG, and PNG by Chromium)."""
    traces = await trace_targets(svc, state)
    for t in traces:
        render_trace(t.to_dict(), out)
    picture.parent.mkdir(parents=True, exist_ok=True)
    svg = picture.with_suffix(".svg")
    svg.write_text(trace_svg(traces[0]))
    saved = [svg]
    if browser.chromium() is not None:
        saved.append(browser.screenshot(svg.resolve().as_uri(), picture.with_suffix(".png"), 1700, 470))
    print(f"  picture: {', '.join(str(p) for p in saved)}", file=out)
    return worst(t.verdict for t in traces).value


def _say(out: TextIO, text: str) -> None:
    print(f"\n=== {text}", file=out, flush=True)


async def _story(
    emu: ArmEmulator,
    hook: WebhookReceiver,
    settings: Any,
    state: desired.DesiredState,
    breaks: list[Break],
    out_dir: Path,
    out: TextIO,
    react: LabReaction | None = None,
) -> int:
    async with Runtime(settings) as rt:
        assert rt.services is not None
        svc = rt.services

        async def show(dry_run: bool = False) -> dict[str, Any]:
            trigger = Trigger.DEMO_PLAN if dry_run else Trigger.DEMO
            report = await reconcile(svc, state, trigger=trigger, dry_run=dry_run)
            data = report.to_dict()
            render_report(data, out)
            return data

        _say(out, "1. The reference lab is healthy: NVA → both ARS instances → ER gateway, next hop 10.0.3.4")
        first = await show()
        problems = 0 if first["counts"]["drifts"] == 0 else 1
        _say(out, "The path, hop by hop (python -m reconciler trace): whole")
        if await _trace(svc, state, out, out_dir / "pictures" / "trace-healthy") != "ok":
            problems += 1

        # The firewall moves during a maintenance window: the reconciler watches and says so, one
        # incident card (the wrong next hop, with what the gateway lost folded under it), and
        # changes nothing until the window ends; then it fixes it and the card resolves.
        now = datetime.now(UTC).replace(microsecond=0)
        window = desired.MaintenanceWindow(start=now - timedelta(minutes=1), end=now + timedelta(hours=1),
                                           reason="firewall upgrade")
        held = state.model_copy(update={"targets": [
            t.model_copy(update={"maintenance": [window]}) for t in state.targets
        ]})
        _say(out, f"Break: {scenarios.firewall_redeployed(emu)} (during a maintenance window)")
        report = await reconcile(svc, held, trigger=Trigger.DEMO)
        render_report(report.to_dict(), out)
        if not report.counts()["remaining"]:
            problems += 1
        _say(out, "The maintenance window ends: the reconciler puts the next hop on the firewall's new IP")
        if (await show())["counts"]["remaining"]:
            problems += 1

        for _label, do_break in breaks:
            if react is not None:
                react.start()
            said = do_break()
            _say(out, f"Break: {said if isinstance(said, str) else _label}")
            if react is not None:
                problems += await react.noticed(out)
            print("--- plan (dry run: what apply would do)", file=out)
            planned = await show(dry_run=True)
            if not planned["counts"]["drifts"]:
                print("  unexpected: the plan found no drift right after the break", file=out)
                problems += 1
            if react is not None:
                print("--- the targeted pass the agent's report queued (Teams gets a compact \"fixed automatically\""
                      " notice)", file=out)  # fmt: skip
                assert rt.ledger is not None
                problems += await react.repaired(out, rt.ledger)
                continue
            print("--- apply (fixed within the pass: Teams gets a compact \"fixed automatically\" notice)", file=out)
            fixed = await show()
            if fixed["counts"]["remaining"]:
                problems += 1

        _say(out, f"Break: {scenarios.branch_to_branch_off(emu)} (Azure-side writes are off by policy)")
        left = await show()
        if not left["counts"]["remaining"]:
            problems += 1
        _say(out, "The path after the break: the first broken hop is the root cause")
        if await _trace(svc, state, out, out_dir / "pictures" / "trace-broken") != "broken":
            problems += 1
        _say(out, "An operator turns branch-to-branch back on by hand")
        with emu.world.lock:
            emu.world.route_server(scenarios.SUB, scenarios.RG, scenarios.RS).branch_to_branch = True
        await show()

        _say(out, "The ledger (Azure Table Storage on Azurite): open drift and the last passes")
        assert rt.ledger is not None
        opened = await rt.ledger.open_drifts()
        print(f"  open drift: {len(opened)}", file=out)
        resolved = [h for h in await rt.ledger.history(limit=200) if h.get("kind") == "resolved"]
        print(f"  resolved drift records: {len(resolved)}", file=out)
        for h in resolved[:12]:
            print(f"    {h.get('code')} {h.get('subject')} lasted {h.get('duration_s', '?')} s", file=out)
        passes = await rt.ledger.passes(limit=20)
        print(f"  passes recorded: {len(passes)}", file=out)
        for p in passes[:5]:
            print(f"    {p.started_at:%H:%M:%S} {p.trigger:<10} {p.duration_s:.2f} s {dict(p.counts)}", file=out)

    _say(out, "Teams cards the local receiver got (Adaptive Card 1.4 in the Workflows envelope)")
    cards_dir = out_dir / "cards"
    cards_dir.mkdir(parents=True, exist_ok=True)
    drawn = 0
    for i, req in enumerate(hook.accepted()):
        body = req.json()
        (cards_dir / f"card-{i:02d}.json").write_text(json.dumps(body, indent=2))
        print(f"  card {i:02d}: {': '.join(cards.header_texts(body)[:2])}", file=out)
        drawn += _screenshot(body, cards_dir / f"card-{i:02d}.png", out)
    print(f"  saved {len(hook.accepted())} card(s) under {cards_dir}"
          + (f", {drawn} drawn as Teams shows them (PNG)" if drawn else ""), file=out)
    if not hook.accepted():
        problems += 1
    return problems


def _screenshot(message: dict[str, Any], path: Path, out: TextIO) -> int:
    """Draw one card with the official renderer in headless Chromium (1), or say why not (0)."""
    from localenv.cardview import RenderUnavailable, render

    try:
        render(message, path)
    except (RenderUnavailable, RuntimeError, OSError) as exc:
        print(f"    (no screenshot: {exc})", file=out)
        return 0
    return 1


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    p = argparse.ArgumentParser(prog="python -m localenv.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo", help="where cards and reports are saved")
    p.add_argument("--lab", action="store_true", help="use real FRR in network namespaces (root, Debian frr)")
    args = p.parse_args(argv)
    try:
        return run_demo(Path(args.out), out, lab=args.lab)
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one clear line, as the operator CLI does
        return 1


if __name__ == "__main__":
    sys.exit(main())
