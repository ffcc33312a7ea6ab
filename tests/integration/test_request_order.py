"""Issue #18: with the request slots full, the route queries (the critical path: POST, ~1 s at ARM,
then the GET of the result) reach ARM before the bulk of the plain GETs, which still all get through.

A bench fleet (bench/fleetgen.py) observed at once through the real Arm adapter and the real
azure-mgmt-network client against the ARM emulator, with fewer slots than requests; the emulator's
request log gives the order requests reached it. First-come-first-served (before #18) sent 15% of
the plain GETs ahead of the first route query and the median route query after the median GET.
"""

from __future__ import annotations

import asyncio

from bench import fleetgen
from emulator import ArmEmulator, World
from reconciler import desired
from reconciler.arm import Arm, ArmOptions, StaticTokenCredential
from reconciler.observed import Unknown

HUBS = 40
SLOTS = 16
PLAIN_OPS = {"hub.get", "firewall.get", "firewall.health", "vnet.get", "routetable.get"}


async def test_route_queries_leave_before_the_bulk_of_plain_gets() -> None:
    state = desired.parse(fleetgen.desired(HUBS), "bench/fleetgen.py")
    world = World.from_dict(fleetgen.world(HUBS))
    with ArmEmulator(world, latency={"get": 0.02, "post": 0.02}, lro_seconds=0.5, lro_polls=0) as emu:
        arm = Arm(StaticTokenCredential("t"), ArmOptions(endpoint=emu.base_url, ca_bundle=emu.ca_file,
                                                         concurrency=SLOTS))  # fmt: skip
        try:
            observations = await asyncio.gather(*(arm.observe(t) for t in state.targets))
        finally:
            await arm.close()
        log = [r for r in emu.requests if r.subscription is not None]

    for obs in observations:  # every read answered: no GET starved into a timeout
        assert not isinstance(obs.hub, Unknown) and not isinstance(obs.firewall, Unknown)
        assert not any(isinstance(v, Unknown) for v in obs.subnets.values())
    posts = [i for i, r in enumerate(log) if r.method == "POST"]
    plain = [i for i, r in enumerate(log) if r.op in PLAIN_OPS]
    assert len(plain) == HUBS * 6 and len(posts) == HUBS * 4
    ahead = sum(1 for i in plain if i < posts[0])
    assert ahead < 0.1 * len(plain), f"{ahead} of {len(plain)} plain GETs reached ARM before the first route query"
    assert posts[len(posts) // 2] < plain[len(plain) // 2], "the median route query left after the median plain GET"
