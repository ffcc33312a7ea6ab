"""Probe NICs' effective route tables: the emulator derives them from the world and serves them as a
long-running POST; the collector reads them with the real SDK and turns every failure into unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from emulator import ArmEmulator, Fault
from localenv import scenarios
from reconciler import desired
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.observed import Unknown
from tests.fixtures.emulator import network_client

REFERENCE = desired.load("schemas/examples/reference-lab.yaml").targets[0]


@pytest.fixture
async def arm(emulator: ArmEmulator) -> AsyncIterator[Arm]:
    a = Arm(
        StaticTokenCredential("t"),
        ArmOptions(
            endpoint=emulator.base_url, ca_bundle=emulator.ca_file, poll_interval=0, retry_total=2, retry_backoff=0.01
        ),
    )
    yield a
    await a.close()


async def test_effective_route_table_is_a_long_running_post_shaped_like_arms(emulator: ArmEmulator) -> None:
    async with network_client(emulator) as client:
        poller = await client.network_interfaces.begin_get_effective_route_table("rg-hub", "vm1-nic")
        result = await poller.result()
    active = {
        (r.address_prefix[0], r.next_hop_type, tuple(r.next_hop_ip_address))
        for r in result.value
        if r.state == "Active"
    }
    assert ("0.0.0.0/0", "VirtualNetworkGateway", ("10.0.3.4",)) in active  # Route Server's route to the firewall
    assert ("10.0.0.0/16", "VnetLocal", ()) in active
    assert [r.status for r in emulator.requests if r.op == "nic.routes"] == [202]


async def test_healthy_probes_read_through_the_collector_are_no_drift(arm: Arm) -> None:
    obs = await arm.observe(REFERENCE)
    assert set(obs.nics) == {"nva1-nic", "vm1-nic"}
    assert diff(REFERENCE, obs) == []


async def test_a_broken_nva_route_reaches_the_workload_nic(arm: Arm, emulator: ArmEmulator) -> None:
    scenarios.next_hop_not_set(emulator)
    found = {(d.code, d.subject) for d in diff(REFERENCE, await arm.observe(REFERENCE))}
    assert (C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0") in found
    assert (C.NIC_ROUTE_WRONG, "nic=nva1-nic/prefix=0.0.0.0/0") not in found  # its UDR still wins


@pytest.mark.parametrize(
    "fault",
    [
        Fault.error(status=500, count=None),
        Fault.throttle(count=None, retry_after=0),
        Fault.lro_failed(),
        Fault.malformed(count=None),
    ],
    ids=["500", "429", "lro-failed", "malformed"],
)
async def test_a_failed_nic_read_is_unknown_and_nothing_else(arm: Arm, emulator: ArmEmulator, fault: Fault) -> None:
    emulator.inject("nic.routes", fault, resource="vm1-nic")
    obs = await arm.observe(REFERENCE)
    assert isinstance(obs.nics["vm1-nic"], Unknown)
    assert [(d.code, d.subject) for d in diff(REFERENCE, obs)] == [
        (C.OBSERVATION_FAILED, "read=nic.routes/resource=vm1-nic")
    ]


async def test_a_nic_that_is_gone_is_drift_not_unknown(arm: Arm, emulator: ArmEmulator) -> None:
    with emulator.world.lock:
        emulator.world.nics = [n for n in emulator.world.nics if n.name != "vm1-nic"]
    found = {(d.code, d.subject) for d in diff(REFERENCE, await arm.observe(REFERENCE))}
    assert found == {(C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0")}


@pytest.mark.parametrize("style", ["location", "azure-async-operation", "both"])
async def test_every_lro_style_of_the_nic_read_is_read_or_unknown_never_no_routes(
    arm: Arm, emulator: ArmEmulator, style: str
) -> None:
    from emulator.world import OperationLroStyle

    with emulator.world.lock:
        emulator.world.lro_styles = [OperationLroStyle("nic.routes", style)]  # type: ignore[arg-type]
    obs = await arm.observe(REFERENCE)
    routes = obs.nics["vm1-nic"]
    if isinstance(routes, Unknown):
        # Azure-AsyncOperation only leaves the client with the operation status: no route list, unknown.
        assert {d.subject for d in diff(REFERENCE, obs)} == {
            f"read=nic.routes/resource={nic}" for nic in ("nva1-nic", "vm1-nic")
        }
    else:
        assert routes, "an answer that is not a route list must be unknown, never 'no routes'"
        assert diff(REFERENCE, obs) == []
