
"""The fleet-scale benchmark: one detection pass (collect, diff, ledger write; no fixes) over N hubs.

Owns the measurement: fleets of N = 1, 10, 100, 500 hubs (two NVA peers, an ExpressRoute gateway
and a firewall each, over 10 subscriptions) against the ARM emulator with ARM's costs switched on
(latency, ~1 s route queries, per-subscription token buckets) and Azurite for the ledger; the lower
bound of each run from the emulator's own figures; the sequential baseline at N = 10; results as
JSON, a PNG chart and a README table. The emulator and each pass run in their own processes, so
a pass's wall time and peak RSS are the reconciler's alone.

    python bench/fleet.py            full run, writes bench/results/
    python bench/fleet.py --smoke    N = 10 and a short baseline, writes out/bench-smoke/
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/fleet.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

from bench import baseline, fleetgen  # noqa: E402

FULL_SIZES = (1, 10, 100, 500)
SMOKE_SIZES = (10,)
TARGET_RATIO = 1.3  # N = 500 wall time may be at most this many lower bounds
WRITES = frozenset({"PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Profile:
    """ARM's costs as the emulator plays them; one profile for every run, baseline included."""

    latency: dict[str, float] = field(default_factory=lambda: {"get": 0.05, "post": 0.05})
    """Seconds added per HTTP method (or per emulator op name)."""
    lro_seconds: float = 1.0
    """A route query (POST learnedRoutes, getLearnedRoutes, ...) completes this long after it started."""
    lro_polls: int = 0
    """Extra 'still running' answers before completion; 0 = completion is by time alone, as at ARM."""
    lro_style: str = "both"
    """ARM-realistic: Azure-AsyncOperation + Location + Retry-After on every 202."""
    bucket: int = 250
    """ARM's per-subscription read bucket."""
    refill_per_s: float = 25.0
    """ARM's read refill rate per subscription."""

    def lat(self, op: str, method: str) -> float:
        return self.latency.get(op, self.latency.get(method, 0.0))

    def route_query(self, op: str) -> float:
        """Least time one route query can take: POST, wait for completion, one GET of the result."""
        waiting = max(self.lro_seconds, self.lro_polls * self.lat("lro.poll", "get"))
        return self.lat(op, "post") + waiting + self.lat("lro.poll", "get")

    def critical_path(self) -> float:
        """Latency lower bound of one hub: its longest chain of dependent requests."""
        return max(
            self.lat("hub.get", "get"),
            self.lat("firewall.get", "get"),
            self.lat("bgp.list", "get") + self.route_query("routes.learned"),  # peers first, then their routes
            self.route_query("gateway.learned"),
            self.route_query("gateway.advertised"),
            self.lat("vnet.get", "get") + self.lat("routetable.get", "get"),
        )

    def throttle_bound(self, reads_per_subscription: dict[str, int]) -> float:
        """Least time ARM's buckets allow: per subscription, the reads beyond the burst at refill rate."""
        return max((max(0, n - self.bucket) / self.refill_per_s for n in reads_per_subscription.values()), default=0.0)


@dataclass(frozen=True)
class Tuning:
    """The reconciler settings the benchmark runs with (the app-setting names are in `env`)."""

    target_concurrency: int = 128
    """Hubs in flight. 16 (the settings default) leaves 500 hubs latency-bound at ~2x the bound; 64
    leaves 100 hubs waiting for a second round. Time queued for pacing never times a read out."""
    arm_concurrency: int = 64
    reads_per_second: float = 25.0
    read_burst: int = 240

    def env(self) -> dict[str, str]:
        return {
            "ARS_TARGET_CONCURRENCY": str(self.target_concurrency),
            "ARS_ARM_CONCURRENCY": str(self.arm_concurrency),
            "ARS_ARM_READS_PER_SECOND": str(self.reads_per_second),
            "ARS_ARM_READ_BURST": str(self.read_burst),
        }


# ---- the emulator process -----------------------------------------------------------------------


def emulator_worker(conn: Connection, n: int, drift_every: int, profile: Profile) -> None:
    """Serve the fleet until told to stop; answer 'stats' with a summary of the request log."""
    from emulator import ArmEmulator, Throttle, World

    world = World.from_dict(fleetgen.world(n, drifted=fleetgen.drifted_hubs(n, drift_every)))
    with ArmEmulator(
        world,
        latency=profile.latency,
        lro_seconds=profile.lro_seconds,
        lro_polls=profile.lro_polls,
        lro_style=profile.lro_style,
        throttle=Throttle(bucket=profile.bucket, refill_per_s=profile.refill_per_s),
    ) as emu:
        conn.send({"base_url": emu.base_url, "ca_file": emu.ca_file})
        cpu_start = time.process_time()
        while (msg := conn.recv()) != "stop":
            if msg == "stats":
                conn.send({**_log_stats(emu.requests), "cpu_s": time.process_time() - cpu_start})


def _log_stats(log: list[Any]) -> dict[str, Any]:
    arm = [r for r in log if r.subscription is not None]
    spent = Counter(r.subscription for r in arm if r.status != 429 and r.method not in WRITES)
    return {
        "requests": len(arm),
        "by_op": dict(Counter(r.op for r in arm)),
        "by_status": {str(k): v for k, v in Counter(r.status for r in arm).items()},
        "throttled": sum(1 for r in arm if r.status == 429),
        "reads_per_subscription": dict(spent),
        "agent_requests": len(log) - len(arm),
    }


class EmulatorProcess:
    """The emulator in a child process (its threads then never compete with the pass for the GIL)."""

    def __init__(self, n: int, drift_every: int, profile: Profile) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=emulator_worker, args=(child, n, drift_every, profile), daemon=True)

    def __enter__(self) -> EmulatorProcess:
        self._proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("emulator process did not start within 60 s")
        info = self._conn.recv()
        self.base_url: str = info["base_url"]
        self.ca_file: str = info["ca_file"]
        return self

    def stats(self) -> dict[str, Any]:
        self._conn.send("stats")
        return dict(self._conn.recv())

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(timeout=15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run `target(conn, *args)` in a fresh process and return what it sends (its peak RSS is its own)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    try:
        if not parent.poll(540):
            raise RuntimeError(f"{target.__name__} produced nothing within 540 s")
        result = parent.recv()
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
    if "error" in result:
        raise RuntimeError(f"{target.__name__} failed: {result['error']}")
    return dict(result)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- one reconciler pass (child process) ---------------------------------------------------------


def pass_worker(conn: Connection, n: int, base_url: str, ca_file: str, storage: str, tuning: Tuning) -> None:
    try:
        result = asyncio.run(_one_pass(n, base_url, ca_file, storage, tuning))
        result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        conn.send(result)
    except Exception as exc:  # the parent reports it; a traceback in a child would be lost
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


async def _one_pass(n: int, base_url: str, ca_file: str, storage: str, tuning: Tuning) -> dict[str, Any]:
    import psutil

    from reconciler import desired
    from reconciler.composition import AgentDirectory, build_arm
    from reconciler.drift import DriftCode
    from reconciler.ledger import Ledger
    from reconciler.service import Services, reconcile
    from reconciler.settings import load_settings
    from reconciler.trigger import Trigger

    prefix = f"b{n}x{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        {
            "ARS_ARM_ENDPOINT": base_url,
            "ARS_ARM_CA_BUNDLE": ca_file,
            "ARS_ARM_STATIC_TOKEN": "emulator-token",
            "ARS_STORAGE_CONNECTION": storage,
            "ARS_TABLE_PREFIX": prefix,
            **tuning.env(),
        }
    )
    state = desired.parse(fleetgen.desired(n), "bench/fleetgen.py")
    arm = build_arm(settings)
    ledger = Ledger(settings.storage_connection.get_secret_value(), table_prefix=prefix)
    agents = AgentDirectory(settings)
    try:
        await ledger.ensure_tables()
        svc = Services(arm=arm, agents=agents, ledger=ledger, target_concurrency=settings.target_concurrency)
        ledger_before = ledger.requests
        rss_before = psutil.Process().memory_info().rss / 2**20
        cpu_before = time.process_time()
        started = time.perf_counter()
        report = await reconcile(svc, state, trigger=Trigger.BENCH)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        ledger_requests = ledger.requests - ledger_before
    finally:
        await agents.close()
        await ledger.close()
        await arm.close()
    unknown = [d for t in report.targets for d in t.drifts if d.code == DriftCode.OBSERVATION_FAILED]
    return {
        "n": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "arm_requests_client": arm.requests,
        "arm_429_client": arm.throttled,
        "ledger_transactions": ledger_requests,
        "targets_with_drift": sorted(t.target for t in report.targets if t.drifts),
        "targets_in_error": sorted(t.target for t in report.targets if t.status == "error"),
        "drift_codes": dict(Counter(d.code.value for t in report.targets for d in t.drifts)),
        "unknown_reads": len(unknown),
        "unknown_examples": [d.subject for d in unknown[:5]],
        "rss_before_pass_mb": round(rss_before, 1),
        "pass_errors": [f"{s}: {m}" for s, m in report.errors],
    }


def baseline_worker(conn: Connection, n: int, limit: int, base_url: str, ca_file: str, storage: str) -> None:
    try:
        targets = fleetgen.desired(n)["targets"][:limit]
        result = baseline.run(base_url, ca_file, storage, f"baseline{uuid.uuid4().hex[:8]}", targets)
        result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        conn.send(result)
    except Exception as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


# ---- the benchmark --------------------------------------------------------------------------------


def run_size(n: int, storage: str, profile: Profile, tuning: Tuning, drift_every: int) -> dict[str, Any]:
    with EmulatorProcess(n, drift_every, profile) as emu:
        result = _in_child(pass_worker, n, emu.base_url, emu.ca_file, storage, tuning)
        stats = emu.stats()
    throttle = profile.throttle_bound(stats["reads_per_subscription"])
    critical = profile.critical_path()
    bound = max(throttle, critical)
    expected = sorted(fleetgen.Hub(i).name for i in fleetgen.drifted_hubs(n, drift_every))
    return {
        **result,
        "arm_requests": stats["requests"],
        "arm_requests_per_target": stats["requests"] / n,
        "arm_by_op": stats["by_op"],
        "arm_429": stats["throttled"],
        "emulator_cpu_s": stats["cpu_s"],
        "throttle_bound_s": throttle,
        "critical_path_s": critical,
        "lower_bound_s": bound,
        "ratio": result["wall_s"] / bound,
        "drift_as_expected": result["targets_with_drift"] == expected,
    }


def run_baseline(n: int, limit: int, storage: str, profile: Profile, drift_every: int) -> dict[str, Any]:
    with EmulatorProcess(n, drift_every, profile) as emu:
        result = _in_child(baseline_worker, n, limit, emu.base_url, emu.ca_file, storage)
        stats = emu.stats()
    flagged = sorted(name for name, problems in result["verdicts"].items() if problems)
    expected = sorted(fleetgen.Hub(i).name for i in fleetgen.drifted_hubs(n, drift_every) if i < limit)
    return {
        "n": n,
        "targets_checked": limit,
        "wall_s": result["wall_s"],
        # Sequential, so time grows linearly with hubs; a partial run is scaled, and says so.
        "wall_s_for_n": result["wall_s"] * n / limit,
        "scaled": limit != n,
        "arm_requests": stats["requests"],
        "arm_requests_per_target": stats["requests"] / limit,
        "arm_429": stats["throttled"],
        "peak_rss_mb": result["peak_rss_mb"],
        "drift_as_expected": flagged == expected,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--smoke", action="store_true", help="N = 10 only, baseline on 3 hubs (scaled); under a minute")
    ap.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 1,10,100")
    ap.add_argument("--baseline-targets", type=int, help="hubs the sequential baseline checks (of N = 10)")
    ap.add_argument("--drift-every", type=int, default=47, help="hub 3 and every k-th after it has drift; 0 = none")
    ap.add_argument("--out", type=Path, help="results directory")
    ap.add_argument("--arm-concurrency", type=int, default=Tuning.arm_concurrency, help="ARM requests on the wire")
    ap.add_argument("--target-concurrency", type=int, default=Tuning.target_concurrency, help="hubs in flight")
    args = ap.parse_args(argv)

    sizes = args.sizes or (SMOKE_SIZES if args.smoke else FULL_SIZES)
    baseline_targets = args.baseline_targets or (3 if args.smoke else 10)
    out: Path = args.out or (ROOT / "out" / "bench-smoke" if args.smoke else ROOT / "bench" / "results")
    out.mkdir(parents=True, exist_ok=True)
    profile = Profile()
    tuning = Tuning(target_concurrency=args.target_concurrency, arm_concurrency=args.arm_concurrency)

    from localenv.azurite import Azurite

    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with Azurite() as az:
        for n in sizes:
            print(f"N = {n}: running ...", flush=True)
            runs.append(run_size(n, az.connection_string, profile, tuning, args.drift_every))
            print("   " + _line(runs[-1]), flush=True)
        sensitivity = None
        if not args.smoke:
            # The emulator's default: every route query answers "still running" once, however long
            # the client waited. Costs one more GET per query; reported, not hidden.
            print("N = 10 with one forced 'still running' answer per route query ...", flush=True)
            sensitivity = run_size(10, az.connection_string, replace(profile, lro_polls=1), tuning, args.drift_every)
            print("   " + _line(sensitivity), flush=True)
        print(f"baseline: sequential sync SDK on {baseline_targets} of 10 hubs ...", flush=True)
        base = run_baseline(10, baseline_targets, az.connection_string, profile, args.drift_every)
    ten = next((r for r in runs if r["n"] == 10), None)
    speedup = base["wall_s_for_n"] / ten["wall_s"] if ten else None
    results = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "smoke" if args.smoke else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "fleet": {
            "subscriptions": fleetgen.SUBSCRIPTIONS,
            "peers_per_hub": fleetgen.PEERS,
            "per_hub": "Route Server, 2 NVA peers, ExpressRoute gateway (1 on-prem peer), firewall, 2 subnets",
            "drift_every": args.drift_every,
        },
        "profile": asdict(profile),
        "tuning": asdict(tuning),
        "runs": runs,
        "baseline": base,
        "sensitivity_lro_polls_1": sensitivity,
        "speedup_vs_baseline_at_10": speedup,
        "bench_seconds": time.perf_counter() - started,
    }
    (out / "fleet.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (out / "README-table.md").write_text(table(results))
    chart(results, out / "fleet.png")
    print()
    print(table(results))
    print(f"wrote {out}/fleet.json, fleet.png, README-table.md in {results['bench_seconds']:.0f} s")
    return 0 if all(r["unknown_reads"] == 0 and r["drift_as_expected"] for r in runs) else 1


def _line(r: dict[str, Any]) -> str:
    return (
        f"wall {r['wall_s']:.2f} s, bound {r['lower_bound_s']:.2f} s (x{r['ratio']:.2f}), "
        f"{r['arm_requests']} ARM requests ({r['arm_requests_per_target']:.1f}/hub), {r['arm_429']} x 429, "
        f"RSS {r['peak_rss_mb']:.0f} MB, {r['ledger_transactions']} ledger requests, {r['unknown_reads']} unknown"
    )


def table(results: dict[str, Any]) -> str:
    """The README's performance table (Markdown)."""
    p = results["profile"]
    lines = [
        f"One detection pass (collect, diff, ledger; no fixes), {results['fleet']['subscriptions']} subscriptions, "
        f"{results['fleet']['peers_per_hub']} NVA peers per hub; emulated ARM: {p['latency']} latency, route "
        f"queries done after {p['lro_seconds']:g} s, read bucket {p['bucket']} + {p['refill_per_s']:g}/s per "
        f"subscription; {results['machine']['cpus']} CPUs.",
        "",
        "| hubs | wall s | lower bound s | wall / bound | ARM requests | per hub | 429s | peak RSS MB "
        "| ledger requests | unknown |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['n']} | {r['wall_s']:.2f} | {r['lower_bound_s']:.2f} | {r['ratio']:.2f} | {r['arm_requests']} "
            f"| {r['arm_requests_per_target']:.1f} | {r['arm_429']} | {r['peak_rss_mb']:.0f} "
            f"| {r['ledger_transactions']} | {r['unknown_reads']} |"
        )
    s = results.get("sensitivity_lro_polls_1")
    if s:
        lines += [
            "",
            f"If every route query answered 'still running' once more (the emulator's default `lro_polls=1`): "
            f"{s['arm_requests_per_target']:.1f} ARM requests per hub, {s['wall_s']:.2f} s at {s['n']} hubs.",
        ]
    b = results["baseline"]
    scaled = f" (measured on {b['targets_checked']} hubs, scaled to 10)" if b["scaled"] else ""
    lines += [
        "",
        f"Sequential baseline (synchronous SDK, one call at a time, SDK-default polling) at 10 hubs: "
        f"{b['wall_s_for_n']:.1f} s{scaled}, {b['arm_requests_per_target']:.1f} ARM requests per hub. "
        + (
            f"Speed-up at 10 hubs: {results['speedup_vs_baseline_at_10']:.0f}x."
            if results["speedup_vs_baseline_at_10"]
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    ns = [r["n"] for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(ns, [r["wall_s"] for r in runs], "o-", label="reconciler pass (wall time)")
    ax.plot(ns, [r["lower_bound_s"] for r in runs], "s--", label="lower bound (max of throttle, critical path)")
    ax.plot(ns, [TARGET_RATIO * r["lower_bound_s"] for r in runs], ":", color="grey", label="1.3 x lower bound")
    b = results["baseline"]
    ax.plot([10], [b["wall_s_for_n"]], "x", markersize=10, color="red", label="sequential sync baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hubs in the fleet (10 subscriptions)")
    ax.set_ylabel("seconds")
    ax.set_title("ars-reconciler: one detection pass against emulated ARM")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
