"""Request slots (issue #18): the critical path's requests leave first, plain GETs never starve.

SlotOrder is pure, so its order is checked step by step; RequestSlots (the asyncio waiting around
it) is checked for the order tasks get their slots and for cancelled waiters.
"""

from __future__ import annotations

import asyncio

import pytest

from reconciler.arm import CRITICAL_RUN, Lane, RequestSlots, SlotOrder

C, P = Lane.CRITICAL, Lane.PLAIN


def grants(order: SlotOrder, releases: int) -> list[Lane | None]:
    return [order.release() for _ in range(releases)]


def test_a_free_slot_is_taken_at_once_and_a_full_house_queues() -> None:
    order = SlotOrder(2)
    assert order.arrive(P) and order.arrive(C)
    assert not order.arrive(P)
    assert order.waiting == {C: 0, P: 1}
    assert order.release() is P
    assert order.release() is None and order.free == 1  # nobody waits: the slot stays free


def test_critical_requests_overtake_plain_ones_that_arrived_earlier() -> None:
    order = SlotOrder(1)
    assert order.arrive(P)
    for lane in (P, P, P, C, C):
        assert not order.arrive(lane)
    assert grants(order, 5) == [C, C, P, P, P]


def test_plain_requests_get_a_slot_after_each_run_of_critical_ones() -> None:
    order = SlotOrder(1, critical_run=3)
    assert order.arrive(P)
    for lane in [C] * 7 + [P] * 2:
        order.arrive(lane)
    assert grants(order, 9) == [C, C, C, P, C, C, C, P, C]


def test_the_run_counts_only_while_plain_requests_wait() -> None:
    order = SlotOrder(1, critical_run=2)
    assert order.arrive(C)
    for _ in range(5):
        order.arrive(C)
    assert grants(order, 3) == [C, C, C]  # no plain waiter: critical runs on
    order.arrive(P)
    assert grants(order, 3) == [C, C, P]  # the run starts when the plain request arrived


def test_the_default_run_keeps_a_share_for_plain_requests() -> None:
    order = SlotOrder(1)
    assert order.arrive(P)
    for lane in [C] * 1000 + [P] * 100:
        order.arrive(lane)
    first = grants(order, 10 * (CRITICAL_RUN + 1))
    assert first.count(P) == 10  # one in CRITICAL_RUN + 1 under contention


def test_a_withdrawn_waiter_is_not_granted() -> None:
    order = SlotOrder(1)
    assert order.arrive(C)
    order.arrive(P)
    order.withdraw(P)
    assert order.release() is None and order.free == 1


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError):
        SlotOrder(0)


async def test_tasks_get_their_slots_in_lane_order() -> None:
    slots = RequestSlots(1, critical_run=2)
    started: list[str] = []
    gate = asyncio.Event()

    async def request(name: str, lane: Lane) -> None:
        async with slots.slot(lane):
            started.append(name)
            if name == "first":
                await gate.wait()

    first = asyncio.create_task(request("first", P))
    await asyncio.sleep(0)
    others = [asyncio.create_task(request(f"{lane.value}{i}", lane)) for i, lane in enumerate([P, P, C, C, C])]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *others)
    assert started == ["first", "critical2", "critical3", "plain0", "critical4", "plain1"]
    assert slots.order.free == 1


async def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_grantee_passes_its_slot_on() -> None:
    slots = RequestSlots(1)
    holder_in, release_holder = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.slot(P):
            holder_in.set()
            await release_holder.wait()

    async def waiter(lane: Lane, done: list[str], name: str) -> None:
        async with slots.slot(lane):
            done.append(name)

    done: list[str] = []
    h = asyncio.create_task(holder())
    await holder_in.wait()
    gone = asyncio.create_task(waiter(C, done, "gone"))
    stays = asyncio.create_task(waiter(P, done, "stays"))
    await asyncio.sleep(0)
    gone.cancel()  # cancelled while waiting: withdrawn from the critical lane
    await asyncio.gather(gone, return_exceptions=True)
    assert slots.order.waiting == {C: 0, P: 1}
    release_holder.set()
    await asyncio.gather(h, stays)
    assert done == ["stays"]
    assert slots.order.free == 1

    # Granted, then cancelled before it ran: the slot goes to the next waiter, not lost.
    h = asyncio.create_task(holder())
    holder_in.clear()
    release_holder.clear()
    await holder_in.wait()
    granted = asyncio.create_task(waiter(C, done, "granted"))
    nxt = asyncio.create_task(waiter(P, done, "next"))
    await asyncio.sleep(0)
    release_holder.set()
    await asyncio.sleep(0)  # the holder leaves and grants `granted` its slot ...
    granted.cancel()  # ... which is cancelled before it resumes
    await asyncio.wait_for(asyncio.gather(h, granted, nxt, return_exceptions=True), 5)  # a lost slot hangs
    assert "granted" not in done and done[-1] == "next"
    assert slots.order.free == 1


def test_the_zero_cpu_floor_of_a_100_hub_pass_gains_from_the_two_lanes() -> None:
    """bench/floor.py drives the real SlotOrder: the lanes shorten a slot-bound pass's schedule."""
    from bench import fleetgen, floor

    def latency(op: str, method: str) -> float:
        return 0.05

    kwargs = {"subscriptions": fleetgen.SUBSCRIPTIONS, "slots": 64, "target_concurrency": 128,
              "reads_per_second": 25.0, "read_burst": 240}  # fmt: skip
    shape = floor.HubShape(peers=fleetgen.PEERS)
    lanes = floor.simulate(100, shape, latency, 1.0, prioritised=True, **kwargs)
    fifo = floor.simulate(100, shape, latency, 1.0, prioritised=False, **kwargs)
    assert sum(lanes.by_op.values()) == sum(fifo.by_op.values()) == 100 * sum(shape.requests_by_op().values())
    assert lanes.by_op == {op: 100 * k for op, k in shape.requests_by_op().items()}
    assert 1.15 <= lanes.seconds < fifo.seconds  # never below the 1.15 s critical path
