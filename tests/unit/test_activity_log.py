"""The Activity Log fallback: which resources a drift points at, and which logged change wins. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.activity_log import ActivityLog, latest_change, query_path, resources_for
from reconciler.attribution import ChangeSource
from reconciler.drift import Drift, DriftCode
from reconciler.events import normalise_id
from tests.unit.factories import target

OWN = frozenset({normalise_id("a1b2c3d4-0000-4000-8000-00000000ec01")})


def entry(op: str, at: str, *, upn: str = "", appid: str = "app-x", status: str = "Succeeded") -> dict[str, Any]:
    claims = {"appid": appid, **({"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": upn} if upn else {})}
    return {"operationName": {"value": op}, "status": {"value": status}, "eventTimestamp": at, "claims": claims,
            "caller": upn or appid, "correlationId": "c1", "resourceId": "/subscriptions/s/r"}  # fmt: skip


def test_nva_side_drift_points_at_no_azure_resource() -> None:
    t = target()
    assert resources_for(t, [Drift(t.name, DriftCode.ROUTE_NEXT_HOP_WRONG, "peer=nva1", "")]) == []


def test_azure_side_drift_points_at_its_resource() -> None:
    t = target()
    hub = resources_for(t, [Drift(t.name, DriftCode.BRANCH_TO_BRANCH_DISABLED, "hub", "")])
    assert len(hub) == 1 and hub[0].endswith(f"/virtualHubs/{t.route_server}")


def test_the_newest_change_by_someone_else_wins() -> None:
    got = latest_change(
        [
            entry("Microsoft.Network/virtualHubs/write", "2026-12-02T10:00:00Z", upn="bob@x"),
            entry("Microsoft.Network/virtualHubs/write", "2026-12-02T11:00:00Z", upn="alice@x"),
            entry("Microsoft.Network/virtualHubs/write", "2026-12-02T12:00:00Z", appid="a1b2c3d4-0000-4000-8000-00000000ec01"),
            entry("Microsoft.Network/virtualHubs/write", "2026-12-02T12:30:00Z", upn="eve@x", status="Failed"),
            entry("Microsoft.Network/virtualHubs/read", "2026-12-02T12:40:00Z", upn="mallory@x"),
        ],
        OWN,
    )
    assert got is not None and got.who == "alice@x" and got.source is ChangeSource.ACTIVITY_LOG
    assert got.at == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


def test_garbage_entries_are_skipped() -> None:
    assert latest_change([{}, {"status": "x"}, entry("a/write", "not a time")], OWN) is None


def test_the_query_filters_by_time_and_resource() -> None:
    path = query_path("s", "/subscriptions/s/r", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    assert "api-version=2015-04-01" in path and "resourceUri%20eq%20%27/subscriptions/s/r%27" in path


def test_a_peer_drift_points_at_that_peers_connection_not_a_name_prefix_of_it() -> None:
    # "peer=nva10" contains "peer=nva1": a substring match blamed nva1's connection for nva10's drift.
    def peer(name: str, ip: str) -> dict[str, Any]:
        return {"name": name, "ip": ip, "asn": 65001, "agent_url": f"https://{ip}:8443", "token_setting": "T"}

    t = target(peers=[peer("nva1", "10.0.1.6"), peer("nva10", "10.0.1.60")])
    got = resources_for(t, [Drift(t.name, DriftCode.PEER_MISSING, "peer=nva10", "")])
    assert len(got) == 1 and got[0].endswith("/bgpConnections/nva10"), got


async def test_drift_the_log_cannot_place_costs_no_request() -> None:
    # The service asks on every pass with drift: resources_for is the one place that says which
    # drift the Activity Log can explain, so agent-side drift must not reach ARM.
    class Arm:
        def __init__(self) -> None:
            self.paths: list[str] = []

        async def get_json(self, subscription: str, path: str) -> Any:
            self.paths.append(path)
            return {"value": []}

    arm, t, now = Arm(), target(), datetime.now(UTC)
    log = ActivityLog(arm, [])
    assert await log.who_changed(t, [Drift(t.name, DriftCode.PEER_DOWN, "peer=nva1", "")], now) is None
    assert arm.paths == []
    await log.who_changed(t, [Drift(t.name, DriftCode.BRANCH_TO_BRANCH_DISABLED, "hub", "")], now)
    assert len(arm.paths) == 1
