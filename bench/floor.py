"""The zero-CPU schedule floor: one detection pass's ARM requests, scheduled as the reconciler
schedules them, with no CPU spent anywhere.

Owns a discrete-event model of the pass over a bench fleet: per hub the reads `reconciler.arm.Arm`
makes and what each waits for (the learned-routes queries wait for the peer list, the route tables
for the VNet, a route query's result GET for its Retry-After), the client's pacing per subscription
(the arithmetic of `reconciler.arm.TokenBucket`), the request slots (`reconciler.arm.SlotOrder`, or
first come first served as before issue #18), the emulator's latency per request, and the hubs in
flight. Every request costs only its latency, so the gap between this floor and a measured wall
time is CPU (and the machine's noise); the gap between the floor and the lower bound is the
schedule's. `requests_by_op` lets the bench check the model against the emulator's own count.
Must not import the emulator or do I/O: it is arithmetic over the reconciler's own slot order.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.arm import Lane, SlotOrder

Latency = Callable[[str, str], float]  # (emulator op, HTTP method) -> seconds


@dataclass(frozen=True)
class HubShape:
    """What one bench hub holds (bench/fleetgen.py): what its detection pass reads."""

    peers: int
    onprem_peers: int = 1
    route_tables: int = 2

    def requests_by_op(self) -> Counter[str]:
        """The requests one healthy hub costs, by the emulator's op names."""
        queries = self.peers + 1 + self.onprem_peers  # learned routes per peer; gateway learned + advertised
        return Counter({
            "hub.get": 1, "firewall.get": 1, "firewall.health": 1, "vnet.get": 1, "bgp.list": 1,
            "routetable.get": self.route_tables, "routes.learned": self.peers, "gateway.learned": 1,
            "gateway.advertised": self.onprem_peers, "lro.poll": queries,
        })  # fmt: skip


@dataclass(frozen=True)
class Floor:
    seconds: float
    """When the last hub's last request is answered."""
    first_route_query_s: float
    """When the first route query (POST) got a slot."""
    by_op: dict[str, int]


class _FirstCome:
    """The slots before issue #18: one queue, first come first served (SlotOrder's interface)."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self._lanes: deque[Lane] = deque()

    def arrive(self, lane: Lane) -> bool:
        if self.free > 0 and not self._lanes:
            self.free -= 1
            return True
        self._lanes.append(lane)
        return False

    def release(self) -> Lane | None:
        if not self._lanes:
            self.free += 1
            return None
        return self._lanes.popleft()


@dataclass
class _Request:
    subscription: int
    op: str
    method: str
    lane: Lane
    then: Callable[[], None]


@dataclass
class _Sim:
    latency: Latency
    lro_seconds: float
    slots: SlotOrder | _FirstCome
    rate: float
    burst: int
    now: float = 0.0
    first_post: float | None = None
    by_op: Counter[str] = field(default_factory=Counter)
    _events: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: int = 0
    _queues: dict[Lane, deque[_Request]] = field(default_factory=lambda: {lane: deque() for lane in Lane})
    _buckets: dict[int, list[float]] = field(default_factory=dict)  # subscription -> [tokens, last]

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, fn))

    def run(self) -> None:
        while self._events:
            self.now, _, fn = heapq.heappop(self._events)
            fn()

    def send(self, req: _Request) -> None:
        """Spend a pacing token (FIFO per subscription, like TokenBucket), then wait for a slot."""
        tokens, last = self._buckets.setdefault(req.subscription, [float(self.burst), self.now])
        tokens = min(float(self.burst), tokens + (self.now - last) * self.rate) - 1
        self._buckets[req.subscription] = [tokens, self.now]
        ready = self.now if tokens >= 0 else self.now - tokens / self.rate
        self.at(ready, lambda: self._arrive(req))

    def _arrive(self, req: _Request) -> None:
        if self.slots.arrive(req.lane):
            self._start(req)
        else:
            self._queues[req.lane].append(req)

    def _start(self, req: _Request) -> None:
        if req.method == "POST" and self.first_post is None:
            self.first_post = self.now
        self.by_op[req.op] += 1
        self.at(self.now + self.latency(req.op, req.method.lower()), lambda: self._done(req))

    def _done(self, req: _Request) -> None:
        lane = self.slots.release()
        if lane is not None:
            self._start(self._queues[lane].popleft())
        req.then()


def simulate(
    n: int,
    shape: HubShape,
    latency: Latency,
    lro_seconds: float,
    *,
    subscriptions: int,
    slots: int,
    target_concurrency: int,
    reads_per_second: float,
    read_burst: int,
    prioritised: bool = True,
) -> Floor:
    """The pass over `n` hubs (hub i in subscription i mod `subscriptions`, as fleetgen spreads them)."""
    sim = _Sim(latency, lro_seconds, SlotOrder(slots) if prioritised else _FirstCome(slots),
               reads_per_second, read_burst)  # fmt: skip
    waiting = deque(range(n))

    def start_hub(i: int) -> None:
        sub = i % subscriptions
        left = [0]

        def request(op: str, method: str, lane: Lane, then: Callable[[], None] | None = None) -> None:
            left[0] += 1

            def done() -> None:
                if then is not None:
                    then()
                left[0] -= 1
                if left[0] == 0 and waiting:
                    start_hub(waiting.popleft())  # a hub finished: the next one starts

            sim.send(_Request(sub, op, method, lane, done))

        def route_query(op: str) -> None:
            # POST, then one GET of its Location once the Retry-After (whole seconds) has passed.
            def poll_later() -> None:
                left[0] += 1  # the hub is not done while the query waits out its Retry-After

                def poll() -> None:
                    left[0] -= 1
                    request("lro.poll", "GET", Lane.CRITICAL)

                sim.at(sim.now + math.ceil(lro_seconds), poll)

            request(op, "POST", Lane.CRITICAL, poll_later)

        # In the order Arm.observe issues them: the peer list is awaited inline, so it reaches the
        # pacing queue first; the other reads are tasks, which start in the order they were made.
        request("bgp.list", "GET", Lane.CRITICAL, lambda: [route_query("routes.learned") for _ in range(shape.peers)])
        for op in ("hub.get", "firewall.get", "firewall.health"):
            request(op, "GET", Lane.PLAIN)
        route_query("gateway.learned")
        for _ in range(shape.onprem_peers):
            route_query("gateway.advertised")
        request("vnet.get", "GET", Lane.PLAIN,
                lambda: [request("routetable.get", "GET", Lane.PLAIN) for _ in range(shape.route_tables)])  # fmt: skip

    for _ in range(min(n, target_concurrency)):
        start_hub(waiting.popleft())
    sim.run()
    return Floor(sim.now, sim.first_post or 0.0, dict(sim.by_op))
