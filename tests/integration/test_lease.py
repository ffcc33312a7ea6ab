"""One writer per target, against Azurite's blob leases: races, release, renewal, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from azure.storage.blob.aio import BlobLeaseClient, BlobServiceClient

from localenv.azurite import Azurite
from reconciler.errors import LockedError, TransientError
from reconciler.lease import TargetLeases
from reconciler.storage_rules import encode_key

pytestmark = pytest.mark.azurite

T = "/subscriptions/s1/resourceGroups/rg-hub/providers/Microsoft.Network/virtualHubs/ars-weu"


@pytest.fixture
async def leases(azurite: Azurite, storage_prefix: str) -> AsyncIterator[TargetLeases]:
    async with TargetLeases(azurite.connection_string, container=f"{storage_prefix}-leases") as tl:
        yield tl


async def _poll(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_twenty_concurrent_holders_yield_one_winner(leases: TargetLeases) -> None:
    """A fresh target (no container, no blob yet): the creation race must not break the lock."""
    losers_done = asyncio.Event()
    winners: list[int] = []
    locked: list[int] = []

    async def contend(i: int) -> None:
        try:
            async with leases.hold(T):
                winners.append(i)
                await asyncio.wait_for(losers_done.wait(), timeout=10)  # hold until all others tried
        except LockedError as exc:
            assert exc.target == T
            locked.append(i)
            if len(locked) == 19:
                losers_done.set()

    await asyncio.gather(*(contend(i) for i in range(20)))
    assert (len(winners), len(locked)) == (1, 19)


async def test_separate_workers_exclude_each_other_and_release_frees_at_once(
    azurite: Azurite, storage_prefix: str
) -> None:
    container = f"{storage_prefix}-leases"
    async with TargetLeases(azurite.connection_string, container) as a, \
            TargetLeases(azurite.connection_string, container) as b:
        async with a.hold(T):
            with pytest.raises(LockedError, match="locked by another pass"):
                async with b.hold(T):
                    pass
            async with b.hold("another/target"):  # other targets are independent
                pass
        async with b.hold(T):  # released at the end of a's block, no expiry wait
            pass


async def test_lease_is_released_when_the_body_fails(leases: TargetLeases) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with leases.hold(T):
            raise RuntimeError("boom")
    async with leases.hold(T):
        pass


def test_lease_duration_outside_storage_limits_is_refused() -> None:
    with pytest.raises(ValueError, match=r"15\.\.60"):
        TargetLeases("UseDevelopmentStorage=true", duration_s=10)


async def test_storage_outage_is_transient(private_azurite: Azurite) -> None:
    async with TargetLeases(private_azurite.connection_string, retries=1) as tl:
        async with tl.hold(T):
            pass
        private_azurite.stop()
        with pytest.raises(TransientError, match=r"acquire lease for .*storage unreachable"):
            async with tl.hold(T):
                pass
        private_azurite.start()
        async with tl.hold(T):
            pass


@pytest.mark.slow
async def test_renewal_keeps_the_lease_past_its_duration(
    azurite: Azurite, leases: TargetLeases
) -> None:
    async with TargetLeases(azurite.connection_string, leases.container) as other:
        started = time.monotonic()
        async with leases.hold(T):
            # Renewals every 5 s; the third lands at 15 s, when an un-renewed lease would be free.
            await _poll(lambda: leases.renewals >= 3, timeout=25, what="3 renewals")
            assert time.monotonic() - started >= 15
            with pytest.raises(LockedError):
                async with other.hold(T):
                    pass


@pytest.mark.slow
async def test_holder_that_lost_its_lease_is_told_on_exit(azurite: Azurite, leases: TargetLeases) -> None:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as svc:
        blob = svc.get_blob_client(leases.container, encode_key(T))
        with pytest.raises(TransientError, match="was lost while held"):
            async with leases.hold(T):
                await BlobLeaseClient(blob).break_lease(lease_break_period=0)
                thief = BlobLeaseClient(blob)
                await thief.acquire(lease_duration=15)
                # The next renewal (at 5 s) finds someone else's lease.
                await _poll(lambda: leases.renewals == 0 and _renewer_done(), timeout=10, what="renewal")
        await thief.release()


def _renewer_done() -> bool:
    return not any(t.get_name().startswith("lease-renew:") and not t.done() for t in asyncio.all_tasks())
