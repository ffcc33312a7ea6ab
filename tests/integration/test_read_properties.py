"""Property: any JSON value in any read is OBSERVATION_FAILED or a valid observation, never a crash.

Random JSON values, and Microsoft's example bodies with one part replaced by a random value, are
served for one read at a time through the real SDK pipeline and our Arm adapter. The pass must
neither raise nor report an internal error, and a read that became unknown must plan nothing.
Seeded: CI uses a fixed seed; set READ_PROPERTY_SEED to explore, and a failure prints its seed.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from emulator import ArmEmulator, Fault
from reconciler import desired
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.observed import Firewall, Gateway, Hub, Observation, SubnetRouting, Unknown
from reconciler.plan import plan
from reconciler.service import known_from

SEED = int(os.environ.get("READ_PROPERTY_SEED", "20261202"))
CASES = int(os.environ.get("READ_PROPERTY_CASES", "12"))
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "arm"
REFERENCE = desired.load("schemas/examples/reference-lab.yaml").targets[0]
# Each read the collector makes, with the published example its mutations start from.
READS = {
    "hub.get": "VirtualHubGet.json",
    "bgp.list": "VirtualHubBgpConnectionList.json",
    "routes.learned": "az-routeserver-peering-list-learned-routes.json",
    "gateway.learned": "VirtualRouterPeerListLearnedRoute.json",  # route entries, wrapped in value below
    "gateway.advertised": "VirtualRouterPeerListLearnedRoute.json",
    "firewall.get": "AzureFirewallGet.json",
    "firewall.health": "firewall-health-degraded.json",
    "vnet.get": "VirtualNetworkGet.json",
    "routetable.get": "RouteTableGet.json",
}
# Reads the NVA intent is built from: when one is unknown, no step at all may be planned.
FEEDS_FIX = {"hub.get", "bgp.list", "routes.learned", "firewall.get"}
KNOWN_REASONS = ("malformed answer:", "empty per-instance map", "gateway not found", "connection disappeared")


def base_body(op: str) -> Any:
    body = json.loads((CORPUS / READS[op]).read_text())["responses"]["200"]["body"]
    if op.startswith("gateway."):
        return {"value": body["RouteServiceRole_IN_0"]}
    return body


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "str", "ip", "prefix"] + (["list", "dict"] * 2 if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 65515, 2**31, 2**64, rng.randint(-(10**6), 10**6)])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e308, float(rng.randint(0, 100))])
    if kind == "str":
        return rng.choice(
            ["", "Succeeded", "RouteServiceRole_IN_0", "10.0.2.4,10.0.2.5", "x" * 300, "ü\u0000", "status"]
        )
    if kind == "ip":
        return rng.choice(["10.0.3.4", "::1", "999.1.1.1", "10.0.3.4 ", "0.0.0.0"])
    if kind == "prefix":
        return rng.choice(["0.0.0.0/0", "10.0.0.0/33", "default", "::/0", "10.1.2.3/8"])
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["value", "properties", "status", "RouteServiceRole_IN_0", "name", "network", "nextHop", "k"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def mutate(body: Any, rng: random.Random) -> Any:
    """The body with one node (chosen at random, at any depth) replaced by a random JSON value."""
    nodes: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k in node:
                nodes.append((node, k))
                walk(node[k])
        elif isinstance(node, list):
            for i in range(len(node)):
                nodes.append((node, i))
                walk(node[i])

    copy = json.loads(json.dumps(body))
    walk(copy)
    if not nodes:
        return random_json(rng)
    parent, key = rng.choice(nodes)
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[key]
    else:
        parent[key] = random_json(rng)
    return copy


def valid(obs: Observation) -> None:
    """Whatever was read has the types and parsed values the diff relies on."""
    if isinstance(obs.hub, Hub):
        assert all(ip_address(ip) for ip in obs.hub.ips)
        assert obs.hub.asn is None or isinstance(obs.hub.asn, int)
        assert isinstance(obs.hub.branch_to_branch, bool)
    if isinstance(obs.connections, tuple):
        assert all(ip_address(c.peer_ip) and isinstance(c.name, str) for c in obs.connections)
    for routes in obs.learned.values():
        if not isinstance(routes, Unknown):
            for entries in routes.values():
                assert all(ip_network(r.prefix) and (r.next_hop is None or ip_address(r.next_hop)) for r in entries)
    if isinstance(obs.firewall, Firewall):
        assert obs.firewall.private_ip is None or ip_address(obs.firewall.private_ip)
    for gw in obs.gateways.values():
        if isinstance(gw, Gateway) and not isinstance(gw.learned, Unknown):
            assert all(ip_network(r.prefix) for r in gw.learned)
    for sn in obs.subnets.values():
        if isinstance(sn, SubnetRouting):
            assert all(ip_network(r.prefix) for r in sn.routes)


@pytest.fixture(scope="module")
def shared_emulator() -> Any:
    from emulator import World
    from tests.fixtures.emulator import REFERENCE_LAB

    with ArmEmulator(World.load(REFERENCE_LAB)) as emu:
        yield emu


@pytest.fixture
async def arm(shared_emulator: ArmEmulator) -> AsyncIterator[Arm]:
    emu = shared_emulator
    # No client-side pacing: hundreds of passes would otherwise wait for ARM's 25 reads/s.
    options = ArmOptions(endpoint=emu.base_url, ca_bundle=emu.ca_file, poll_interval=0, retry_total=0,
                         reads_per_second=1e6, read_burst=10**6)  # fmt: skip
    a = Arm(StaticTokenCredential("t"), options)
    yield a
    await a.close()
    emu.clear_faults()


@pytest.mark.parametrize("op", list(READS))
async def test_any_json_in_a_read_is_unknown_or_valid_and_plans_nothing_from_unknown(
    arm: Arm, shared_emulator: ArmEmulator, op: str
) -> None:
    rng = random.Random(f"{SEED}:{op}")
    for case in range(CASES):
        body = random_json(rng) if case % 3 == 0 else mutate(base_body(op), rng)
        where = f"seed {SEED}, {op}, case {case}: {json.dumps(body)[:300]}"
        shared_emulator.clear_faults()
        shared_emulator.inject(op, Fault.body(body, count=None), subscription="sub-1")
        try:
            obs = await arm.observe(REFERENCE)
        except Exception as exc:  # the property: nothing escapes the adapter
            pytest.fail(f"{type(exc).__name__}: {exc} ({where})")
        drifts = diff(REFERENCE, obs)
        valid(obs)
        # Only our own verdict on the shape, never an SDK or Python error passed through.
        odd = [u for u in obs.unknowns() if not u.reason.startswith(KNOWN_REASONS)]
        assert odd == [], f"{odd} ({where})"
        failed = {d.part("read") for d in drifts if d.code == C.OBSERVATION_FAILED}
        steps = plan(REFERENCE, drifts, known_from(REFERENCE, obs), datetime.now(UTC)).steps
        if failed & FEEDS_FIX:
            assert steps == (), f"planned {steps} from unknown {failed & FEEDS_FIX} ({where})"
