"""The real azure-mgmt-network aio client, through our Arm adapter, against the ARM emulator over HTTPS."""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from emulator import ArmEmulator, BgpConnection, Fault, Throttle, World
from localenv import scenarios
from reconciler import desired
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.observed import Unknown

REFERENCE = desired.load("schemas/examples/reference-lab.yaml").targets[0]
WORLD = "emulator/worlds/reference-lab.yaml"


@pytest.fixture
async def arm(emulator: ArmEmulator) -> AsyncIterator[Arm]:
    a = Arm(
        StaticTokenCredential("t"),
        ArmOptions(
            endpoint=emulator.base_url, ca_bundle=emulator.ca_file, poll_interval=0, retry_total=3, retry_backoff=0.01
        ),
    )
    yield a
    await a.close()


async def drifts(arm: Arm) -> set[tuple[C, str]]:
    return {(d.code, d.subject) for d in diff(REFERENCE, await arm.observe(REFERENCE))}


async def test_healthy_reference_lab_has_no_drift(arm: Arm, emulator: ArmEmulator) -> None:
    obs = await arm.observe(REFERENCE)
    assert diff(REFERENCE, obs) == []
    assert obs.firewall_ip == "10.0.3.4"
    learned = obs.learned["nva1"]
    assert not isinstance(learned, Unknown)
    assert set(learned) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}
    assert {r.next_hop for rs in learned.values() for r in rs} == {"10.0.3.4"}


async def test_healthy_target_costs_one_read_per_resource_and_two_per_route_query() -> None:
    # Route queries finish after 1 s, as ARM's do after some seconds, not after a fixed poll count.
    with ArmEmulator(World.load(WORLD), lro_polls=0, lro_seconds=1.0) as emu:
        a = Arm(StaticTokenCredential("t"), ArmOptions(endpoint=emu.base_url, ca_bundle=emu.ca_file))
        try:
            assert diff(REFERENCE, await a.observe(REFERENCE)) == []
        finally:
            await a.close()
        ops = sorted(r.op for r in emu.requests)
        paths = [r.path for r in emu.requests if r.op == "lro.poll"]
    # hub, peers, firewall and its FirewallHealth metric, the VNet, two route tables; learned, gateway
    # learned and advertised and the two probe NICs' effective routes are POST + one GET of Location
    # each (the Retry-After is waited out first).
    assert ops == sorted(
        ["hub.get", "bgp.list", "firewall.get", "firewall.health", "vnet.get", "routetable.get", "routetable.get"]
        + ["routes.learned", "gateway.learned", "gateway.advertised", "nic.routes", "nic.routes"]
        + ["lro.poll"] * 5
    )
    assert all("/operationResults/" in p for p in paths)
    assert a.requests == 17 and a.throttled == 0


async def test_subnets_sharing_a_route_table_read_it_once(arm: Arm, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        emulator.world.subnet("sub-1", "rg-hub", "hub-vnet", "NvaSubnet").route_table = "fw-rt"
    obs = await arm.observe(REFERENCE)
    assert diff(REFERENCE, obs) == []
    assert [r.op for r in emulator.requests].count("routetable.get") == 1
    assert [r.op for r in emulator.requests].count("vnet.get") == 1


async def test_client_paces_itself_below_arm_throttle_instead_of_collecting_429s() -> None:
    # ARM's bucket shrunk to 6 reads, refilled at 20/s; a pass needs more than that. The client paces
    # a little below the refill, as ArmOptions' defaults sit below ARM's, so a loaded CI box keeps margin.
    with ArmEmulator(World.load(WORLD), throttle=Throttle(bucket=6, refill_per_s=20.0)) as emu:
        a = Arm(
            StaticTokenCredential("t"),
            ArmOptions(
                endpoint=emu.base_url, ca_bundle=emu.ca_file, poll_interval=0, reads_per_second=18.0, read_burst=5
            ),
        )
        try:
            assert diff(REFERENCE, await a.observe(REFERENCE)) == []
        finally:
            await a.close()
        statuses = [r.status for r in emu.requests]
    assert len(statuses) > 6
    assert 429 not in statuses
    assert a.throttled == 0


async def test_time_queued_behind_our_own_pacing_does_not_time_reads_out() -> None:
    # 12 requests at 8/s after a burst of 1 take ~1.4 s; every read may take only 0.5 s on the wire.
    with ArmEmulator(World.load(WORLD), lro_polls=0) as emu:
        a = Arm(
            StaticTokenCredential("t"),
            ArmOptions(
                endpoint=emu.base_url,
                ca_bundle=emu.ca_file,
                poll_interval=0,
                reads_per_second=8.0,
                read_burst=1,
                read_timeout=0.5,
            ),
        )
        try:
            assert diff(REFERENCE, await a.observe(REFERENCE)) == []
        finally:
            await a.close()


async def test_a_read_slower_than_the_timeout_on_the_wire_is_unknown(arm: Arm, emulator: ArmEmulator) -> None:
    emulator.inject("firewall.get", Fault.latency(seconds=1.0, count=1))
    short = Arm(
        StaticTokenCredential("t"),
        ArmOptions(endpoint=emulator.base_url, ca_bundle=emulator.ca_file, poll_interval=0, read_timeout=0.3),
    )
    try:
        found = {(d.code, d.subject) for d in diff(REFERENCE, await short.observe(REFERENCE))}
        # The abandoned connection closes once the emulator wakes from its delay and answers;
        # closing the client before that would leave its TLS shutdown pending at loop end.
        deadline = time.monotonic() + 5
        while not any(r.op == "firewall.get" for r in emulator.requests) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await short.close()
    assert found == {(C.OBSERVATION_FAILED, "read=firewall.get/resource=fw-hub")}


async def test_without_client_pacing_the_same_pass_meets_429s() -> None:
    # The control for the test above: the emulator's throttle does bite when the client does not pace.
    with ArmEmulator(World.load(WORLD), throttle=Throttle(bucket=6, refill_per_s=20.0)) as emu:
        a = Arm(
            StaticTokenCredential("t"),
            ArmOptions(
                endpoint=emu.base_url, ca_bundle=emu.ca_file, poll_interval=0, reads_per_second=1000.0, read_burst=1000
            ),
        )
        try:
            await a.observe(REFERENCE)
        finally:
            await a.close()
        statuses = [r.status for r in emu.requests]
    assert 429 in statuses
    assert a.throttled == statuses.count(429)


async def test_peer_list_pages_are_followed(arm: Arm, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        rs = emulator.world.route_server("sub-1", "rg-hub", "ars-hub")
        rs.connections += [BgpConnection(f"extra{i}", f"10.0.1.{20 + i}", 65010 + i) for i in range(5)]
    found = await drifts(arm)
    assert {s for c, s in found if c == C.PEER_UNEXPECTED} == {f"peer=extra{i}" for i in range(5)}
    pages = [r for r in emulator.requests if r.op == "bgp.list"]
    assert len(pages) == 3  # 6 connections at page size 2


async def test_429_with_retry_after_is_recovered(arm: Arm, emulator: ArmEmulator) -> None:
    emulator.inject("hub.get", Fault.throttle(count=2, retry_after=0))
    emulator.inject("routes.learned", Fault.throttle(count=1, retry_after=0))
    assert await drifts(arm) == set()
    assert [r.status for r in emulator.requests if r.op == "hub.get"] == [429, 429, 200]


@pytest.mark.parametrize(
    ("op", "fault", "subject"),
    [
        ("hub.get", Fault.error(status=500, count=None), "read=hub.get/resource=ars-hub"),
        ("bgp.list", Fault.error(status=503, count=None), "read=bgp.list/resource=ars-hub"),
        ("routes.learned", Fault.error(status=500, count=None), "read=routes.learned/resource=nva1"),
        ("routes.learned", Fault.lro_failed(count=None), "read=routes.learned/resource=nva1"),
        ("routes.learned", Fault.empty_instances(count=None), "read=routes.learned/resource=nva1"),
        ("routes.learned", Fault.malformed(count=None), "read=routes.learned/resource=nva1"),
        ("gateway.learned", Fault.lro_failed(count=None), "read=gateway.learned/resource=ergw"),
        ("gateway.advertised", Fault.error(status=500, count=None), "read=gateway.advertised/resource=ergw:10.0.0.12"),
        ("firewall.get", Fault.error(status=500, count=None), "read=firewall.get/resource=fw-hub"),
        ("firewall.get", Fault.malformed(count=None), "read=firewall.get/resource=fw-hub"),
        ("vnet.get", Fault.error(status=500, count=None), "read=vnet.get/resource=hub-vnet"),
        ("routetable.get", Fault.error(status=500, count=None), "read=routetable.get/resource=fw-rt"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_failed_read_is_observation_failed_and_nothing_else(
    arm: Arm, emulator: ArmEmulator, op: str, fault: Fault, subject: str
) -> None:
    resource = "hub-vnet" if op == "vnet.get" else ("fw-rt" if op == "routetable.get" else None)
    emulator.inject(op, fault, resource=resource)
    found = await drifts(arm)
    assert found == {(C.OBSERVATION_FAILED, subject)}


async def test_missing_token_is_rejected_with_401(emulator: ArmEmulator) -> None:
    ctx = ssl.create_default_context(cafile=emulator.ca_file)
    url = f"{emulator.base_url}/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network/virtualHubs/ars-hub?api-version=2026-03-01"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, context=ctx, timeout=5)
    assert info.value.code == 401
    info.value.close()


async def test_absent_route_server_is_absent_not_unknown(arm: Arm, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        emulator.world.route_servers.clear()
    found = await drifts(arm)
    assert (C.ROUTE_SERVER_UNHEALTHY, "route_server=ars-hub") in found
    assert not any(c == C.OBSERVATION_FAILED for c, _ in found)


BREAKS = {
    "firewall-redeployed": {
        (C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0"),
        (C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_1/prefix=0.0.0.0/0"),
        (C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0"),
        (C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0"),  # the workload VM's real route follows
    },
    "branch-to-branch-off": {
        (C.BRANCH_TO_BRANCH_DISABLED, "route_server=ars-hub"),
        (C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0"),
        (C.GATEWAY_NOT_ADVERTISING, "gateway=ergw/onprem=10.0.0.12/prefix=0.0.0.0/0"),
    },
    "instance-lost-peering": {
        (C.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_1"),
        (C.ROUTE_MISSING, "peer=nva1/instance=RouteServiceRole_IN_1/prefix=0.0.0.0/0"),
    },
    "next-hop-not-set": {
        (C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0"),
        (C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_1/prefix=0.0.0.0/0"),
        (C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0"),
        (C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0"),  # the workload VM's real route follows
    },
    "firewall-deallocated": {(C.FIREWALL_UNHEALTHY, "firewall=fw-hub")},
}


@pytest.mark.parametrize("name", sorted(BREAKS))
async def test_named_break_is_caught(arm: Arm, emulator: ArmEmulator, name: str) -> None:
    scenarios.BREAKS[name](emulator)
    assert await drifts(arm) == BREAKS[name]
