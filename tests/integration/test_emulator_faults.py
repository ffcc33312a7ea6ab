"""Injected faults and ARM throttling reach the real SDK the way Azure's would (notes §5, §8)."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import DecodeError, HttpResponseError, ResourceExistsError

from emulator import ArmEmulator, Fault, Throttle, World
from tests.fixtures.emulator import REFERENCE_LAB, TWO_TARGETS, network_client


def statuses(emu: ArmEmulator, op: str) -> list[int]:
    return [r.status for r in emu.requests if r.op == op]


async def test_429_with_retry_after_is_retried_until_it_succeeds(emulator: ArmEmulator) -> None:
    emulator.inject("routes.learned", Fault.throttle(count=2, retry_after=0))
    async with network_client(emulator) as client:
        poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        learned = await poller.result()
    assert len(learned["RouteServiceRole_IN_0"]) == 1
    assert statuses(emulator, "routes.learned") == [429, 429, 202]


async def test_fractional_retry_after_is_honoured(emulator: ArmEmulator) -> None:
    emulator.inject("hub.get", Fault.throttle(count=2, retry_after=0.15))
    started = time.monotonic()
    async with network_client(emulator) as client:
        await client.virtual_hubs.get("rg-hub", "ars-hub")
    assert time.monotonic() - started >= 0.3
    assert statuses(emulator, "hub.get") == [429, 429, 200]


async def test_persistent_500_raises_http_response_error_after_sdk_retries(emulator: ArmEmulator) -> None:
    emulator.inject("hub.get", Fault.error(status=500, count=None))
    async with network_client(emulator) as client:
        with pytest.raises(HttpResponseError) as err:
            await client.virtual_hubs.get("rg-hub", "ars-hub")
    assert err.value.status_code == 500
    assert statuses(emulator, "hub.get") == [500, 500, 500, 500]  # retry_status=3


async def test_one_503_is_absorbed_by_sdk_retry(emulator: ArmEmulator) -> None:
    emulator.inject("gateway.get", Fault.error(status=503, count=1, retry_after=0))
    async with network_client(emulator) as client:
        gw = await client.virtual_network_gateways.get("rg-hub", "ergw")
    assert gw.name == "ergw"
    assert statuses(emulator, "gateway.get") == [503, 200]


def test_retry_after_is_refused_on_statuses_the_sdk_would_wrongly_retry() -> None:
    with pytest.raises(ValueError, match="Retry-After"):
        Fault.error(status=404, retry_after=1)


async def test_failed_lro_raises_http_response_error_with_its_code(emulator: ArmEmulator) -> None:
    emulator.inject("routes.learned", Fault.lro_failed(count=1))
    async with network_client(emulator) as client:
        poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        with pytest.raises(HttpResponseError, match="RouteServerBusy"):
            await poller.result()
        assert poller.status() == "Failed"


async def test_failed_lro_in_location_style_also_raises() -> None:
    with ArmEmulator(World.load(REFERENCE_LAB), lro_style="location") as emu:
        emu.inject("gateway.learned", Fault.lro_failed(count=1))
        async with network_client(emu) as client:
            poller = await client.virtual_network_gateways.begin_get_learned_routes("rg-hub", "ergw")
            with pytest.raises(HttpResponseError):
                await poller.result()


async def test_empty_instances_fault_answers_an_empty_map(emulator: ArmEmulator) -> None:
    emulator.inject("routes.learned", Fault.empty_instances(count=1))
    async with network_client(emulator) as client:
        first = await (
            await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        ).result()
        second = await (
            await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        ).result()
    assert first == {}
    assert set(second) == {"RouteServiceRole_IN_0", "RouteServiceRole_IN_1"}


async def test_busy_fault_is_409_another_operation_in_progress(emulator: ArmEmulator) -> None:
    emulator.inject("bgp.put", Fault.busy(count=1))
    async with network_client(emulator) as client:
        with pytest.raises(ResourceExistsError) as err:
            await client.virtual_hub_bgp_connection.begin_create_or_update(
                "rg-hub", "ars-hub", "nva1", {"properties": {"peerIp": "10.0.1.6", "peerAsn": 65001}}
            )
    assert err.value.status_code == 409
    assert err.value.error is not None
    assert err.value.error.code == "AnotherOperationInProgress"
    assert statuses(emulator, "bgp.put") == [409]  # no Retry-After, so no retry


async def test_malformed_body_fails_to_decode(emulator: ArmEmulator) -> None:
    emulator.inject("firewall.get", Fault.malformed(count=1))
    emulator.inject("routes.learned", Fault.malformed(count=1))
    async with network_client(emulator) as client:
        with pytest.raises(DecodeError):
            await client.azure_firewalls.get("rg-hub", "fw-hub")
        poller = await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
        with pytest.raises(HttpResponseError):
            await poller.result()


async def test_latency_fault_slows_only_its_operation(emulator: ArmEmulator) -> None:
    emulator.inject("subnet.get", Fault.latency(seconds=0.2, count=1))
    async with network_client(emulator) as client:
        started = time.monotonic()
        await client.subnets.get("rg-hub", "hub-vnet", "NvaSubnet")
        slow = time.monotonic() - started
        started = time.monotonic()
        await client.subnets.get("rg-hub", "hub-vnet", "NvaSubnet")
        fast = time.monotonic() - started
    assert slow >= 0.2
    assert fast < 0.2


async def test_fault_scoped_to_a_resource_spares_the_others(emulator: ArmEmulator) -> None:
    emulator.inject("subnet.get", Fault.error(status=400, count=None), resource="AzureFirewallSubnet")
    async with network_client(emulator) as client:
        await client.subnets.get("rg-hub", "hub-vnet", "NvaSubnet")
        with pytest.raises(HttpResponseError):
            await client.subnets.get("rg-hub", "hub-vnet", "AzureFirewallSubnet")
    emulator.clear_faults()
    async with network_client(emulator) as client:
        await client.subnets.get("rg-hub", "hub-vnet", "AzureFirewallSubnet")


@pytest.mark.parametrize("emulator_world_path", [TWO_TARGETS])
async def test_fault_scoped_to_a_subscription_spares_the_other(emulator: ArmEmulator) -> None:
    emulator.inject("hub.get", Fault.error(status=400, count=None), subscription="sub-2")
    async with network_client(emulator, "sub-1") as one, network_client(emulator, "sub-2") as two:
        await one.virtual_hubs.get("rg-hub", "ars-hub")
        with pytest.raises(HttpResponseError):
            await two.virtual_hubs.get("rg-hub2", "ars-hub2")


def test_unknown_operation_name_is_refused(emulator: ArmEmulator) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        emulator.inject("hub.gett", Fault.busy())


async def test_poll_rounds_and_per_operation_latency_are_configurable() -> None:
    with ArmEmulator(World.load(REFERENCE_LAB), lro_polls=3, latency={"get": 0.01, "routes.learned": 0.1}) as emu:
        async with network_client(emu) as client:
            started = time.monotonic()
            await (
                await client.virtual_hub_bgp_connections.begin_list_learned_routes("rg-hub", "ars-hub", "nva1")
            ).result()
            elapsed = time.monotonic() - started
        # 3 "InProgress" polls + 1 "Succeeded" + the final result GET
        assert [r.op for r in emu.requests].count("lro.poll") == 5
        assert elapsed >= 0.1 + 5 * 0.01


async def test_read_bucket_throttles_a_subscription_with_integer_retry_after() -> None:
    with ArmEmulator(World.load(TWO_TARGETS), throttle=Throttle(bucket=3, refill_per_s=0.001)) as emu:
        async with network_client(emu, "sub-1", retry_total=0) as one, network_client(emu, "sub-2") as two:
            for _ in range(3):
                await one.virtual_hubs.get("rg-hub", "ars-hub")
            with pytest.raises(HttpResponseError) as err:
                await one.virtual_hubs.get("rg-hub", "ars-hub")
            # Each subscription has its own bucket.
            await two.virtual_hubs.get("rg-hub2", "ars-hub2")
        assert err.value.status_code == 429
        assert err.value.error is not None
        assert err.value.error.code == "SubscriptionRequestsThrottled"
        assert err.value.response is not None
        assert int(err.value.response.headers["Retry-After"]) >= 1
        assert [r.status for r in emu.requests] == [200, 200, 200, 429, 200]


async def test_writes_use_their_own_bucket() -> None:
    throttle = Throttle(bucket=100, refill_per_s=0.001, write_bucket=1, write_refill_per_s=0.001)
    with ArmEmulator(World.load(REFERENCE_LAB), throttle=throttle) as emu:
        body = {"properties": {"peerIp": "10.0.1.6", "peerAsn": 65001}}
        async with network_client(emu, retry_total=0) as client:
            await client.virtual_hub_bgp_connection.begin_create_or_update("rg-hub", "ars-hub", "nva1", body)
            with pytest.raises(HttpResponseError) as err:
                await client.virtual_hub_bgp_connection.begin_create_or_update("rg-hub", "ars-hub", "nva1", body)
            await client.virtual_hubs.get("rg-hub", "ars-hub")
        assert err.value.status_code == 429


def test_token_bucket_refills_over_time_and_says_when_to_come_back() -> None:
    from emulator.throttle import Throttler

    now = [0.0]
    bucket = Throttler(Throttle(bucket=2, refill_per_s=0.5), clock=lambda: now[0])
    assert bucket.spend("sub-1", write=False) == (None, 1)
    assert bucket.spend("SUB-1", write=False) == (None, 0)  # subscriptions are case-insensitive
    assert bucket.spend("sub-1", write=False) == (2, 0)  # one token needs 2 s at 0.5/s
    assert bucket.spend("sub-1", write=True)[0] is None  # writes have their own bucket
    now[0] = 2.0
    assert bucket.spend("sub-1", write=False)[0] is None
