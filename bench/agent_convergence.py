"""Convergence of the real agent on real FRR: time from the intent call until BOTH stand-in
route servers hold 0.0.0.0/0 via the firewall with AS path 65001 (target: under 1 s).

Run as root with Debian's frr installed:  python bench/agent_convergence.py [--runs 5]
It builds its own lab (namespaces arsrbench-*), breaks the NVA one way per run, and tears down.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from localenv.frrlab import FrrLab, LabUnavailable, nva_config, strong_token, wait_until

BREAKS: dict[str, dict[str, Any]] = {
    "wrong_firewall_ip": {"next_hop": "10.0.3.5"},
    "next_hop_not_set": {"next_hop": None},
    "no_network_statement": {"announce": False},
    "out_filter_lost": {"out_filter": False},
}


def _fixed(lab: FrrLab) -> bool:
    want = {"0.0.0.0/0": {"next_hop": lab.addr.firewall_ip, "as_path": str(lab.addr.nva_asn)}}
    return all(lab.received(rs) == want for rs in (0, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per kind of break (default 3)")
    args = parser.parse_args()
    lab = FrrLab(name="arsrbench")
    token = strong_token()
    try:
        t0 = time.monotonic()
        lab.up()
        print(f"lab up in {time.monotonic() - t0:.2f} s")
        agent = lab.start_agent(token)
        body = {
            "local_asn": lab.addr.nva_asn,
            "neighbors": [{"ip": ip, "asn": lab.addr.rs_asn} for ip in lab.addr.rs_ips],
            "prefixes": ["0.0.0.0/0"],
            "next_hop": lab.addr.firewall_ip,
        }
        rows: list[tuple[str, float, float]] = []
        with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            for name, broken in BREAKS.items():
                for _ in range(args.runs):
                    lab.load_nva_config(nva_config(lab.addr, **broken))
                    wait_until(lambda: not _fixed(lab), 10, f"the {name} drift to show")
                    start = time.monotonic()
                    resp = http.put("/v1/bgp/intent", json=body)
                    answered = time.monotonic() - start
                    if resp.status_code != 200 or not resp.json()["applied"]:
                        print(f"{name}: agent did not apply: {resp.status_code} {resp.text[:300]}")
                        return 1
                    wait_until(lambda: _fixed(lab), 10, "both route servers to hold the route", interval=0.005)
                    rows.append((name, answered, time.monotonic() - start))
    except LabUnavailable as exc:
        print(f"cannot run: {exc}")
        return 77
    finally:
        lab.down()

    print(f"\n{'break':<22} {'agent answered':>15} {'both RS hold route':>19}")
    for name, answered, converged in rows:
        print(f"{name:<22} {answered * 1000:>12.0f} ms {converged * 1000:>16.0f} ms")
    conv = [c for _, _, c in rows]
    lo, mid, hi = (v * 1000 for v in (min(conv), statistics.median(conv), max(conv)))
    print(f"\nconvergence over {len(conv)} runs: min {lo:.0f} ms, median {mid:.0f} ms, max {hi:.0f} ms")
    print("target: < 1000 ms")
    return 0 if max(conv) < 1.0 else 2


if __name__ == "__main__":
    sys.exit(main())
