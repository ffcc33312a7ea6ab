"""The emulator's route table over the wire: every route answers an absent resource the ARM way,
and one slow request does not hold up the others (the server answers on one event loop)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from emulator import ArmEmulator, Fault
from emulator.arm_routes import ROUTES, Route
from tests.fixtures.emulator import tls_context

GROUP = "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network"
AUTH = {"Authorization": "Bearer emulator-token"}
# Bodies and queries that pass each route's own request rules, so only the lookup can refuse.
BODIES = {
    "hub.put": {"location": "westeurope", "properties": {}},
    "bgp.put": {"properties": {"peerIp": "10.0.1.6", "peerAsn": 65001}},
}
QUERY = {"api-version": "2026-03-01", "peer": "10.0.9.9"}


def path_to_nothing(route: Route[object, object]) -> str:
    return GROUP + "".join(f"/{'nope' if p == '*' else p}" for p in route.pattern)


@pytest.mark.parametrize("route", ROUTES, ids=[r.op for r in ROUTES])
async def test_every_route_answers_an_absent_resource_with_arms_404(
    emulator: ArmEmulator, route: Route[object, object]
) -> None:
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=tls_context(emulator)) as http:
        resp = await http.request(
            route.method, path_to_nothing(route), params=QUERY, headers=AUTH, json=BODIES.get(route.op)
        )
    if route.op == "bgp.delete":
        assert resp.status_code == 204  # deleting what is not there is ARM's No Content
        return
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["code"] == "ResourceNotFound"
    assert f"'{route.lookup.kind}/nope" in error["message"]
    assert [(r.op, r.status) for r in emulator.requests] == [(route.op, 404)]


async def test_a_request_rule_is_checked_before_the_lookup(emulator: ArmEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=tls_context(emulator)) as http:
        resp = await http.put(f"{GROUP}/virtualHubs/nope", headers=AUTH, content=b"{not json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "InvalidRequestFormat"


async def test_a_slow_request_does_not_hold_up_the_others(emulator: ArmEmulator) -> None:
    emulator.inject("hub.get", Fault.latency(seconds=1.0, count=1))
    waits: list[float] = []
    async with httpx.AsyncClient(base_url=emulator.base_url, verify=tls_context(emulator), headers=AUTH) as http:
        started = time.monotonic()
        slow = asyncio.ensure_future(http.get(f"{GROUP}/virtualHubs/ars-hub"))
        while not slow.done():  # other requests, one after another, for as long as the slow one takes
            sent = time.monotonic()
            assert (await http.get(f"{GROUP}/azureFirewalls/fw-hub")).status_code == 200
            waits.append(time.monotonic() - sent)
        assert (await slow).status_code == 200
    assert time.monotonic() - started >= 1.0
    assert len(waits) >= 3 and max(waits) < 0.5, waits
