"""ARM events (Microsoft's published samples) -> targets: parsing both schemas, screening, mapping,
coalescing decisions. Pure: no storage, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler import desired
from reconciler.attribution import Attribution, ChangeSource, latest
from reconciler.events import (
    Coalesce,
    Enqueue,
    EventKind,
    Marker,
    Pacing,
    Rejected,
    ResourceIndex,
    Screen,
    Verdict,
    WatchedKind,
    decide,
    is_validation,
    parse,
    screen,
    subject_prefixes,
)
from tests.fixtures.eventgrid import OID, UPN, published, sample

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NET = "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network"
HUB = f"{NET}/virtualHubs/ars-hub"
CONN = f"{HUB}/bgpConnections/nva1"
FW = f"{NET}/azureFirewalls/fw-hub"
GW = f"{NET}/virtualNetworkGateways/ergw"
VNET = f"{NET}/virtualNetworks/hub-vnet"
SUBNET = f"{VNET}/subnets/AzureFirewallSubnet"
RT = f"{NET}/routeTables/rt-fw"
OWN_APP = "a1b2c3d4-0000-4000-8000-00000000ec01"


def state(**second: Any) -> desired.DesiredState:
    base: dict[str, Any] = {
        "name": "hub-weu",
        "subscription_id": "sub-1",
        "resource_group": "rg-hub",
        "route_server": "ars-hub",
        "firewall": {"name": "fw-hub"},
        "gateways": [{"name": "ergw", "type": "ExpressRoute"}],
        "peers": [{"name": "nva1", "ip": "10.0.1.6", "asn": 65001}],
        "subnets": [
            {"vnet": "hub-vnet", "subnet": "AzureFirewallSubnet", "routes": [{"prefix": "0.0.0.0/0", "next_hop_type": "Internet"}]}
        ],
    }
    other = {**base, "name": "hub-neu", "resource_group": "rg-neu", "route_server": "ars-neu", "subnets": [], **second}
    return desired.parse({"version": 1, "targets": [base, other]}, "test")


RULES = Screen.for_state(state(), [OWN_APP], 900)


# ---- the published samples parse, in both schemas ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("write-success.eventgrid", EventKind.WRITE),
        ("delete-success.eventgrid", EventKind.DELETE),
        ("action-success.eventgrid", EventKind.ACTION),
        ("delete-success.cloudevents", EventKind.DELETE),
    ],
)
def test_each_published_sample_parses_with_its_claims(name: str, kind: EventKind) -> None:
    raw = published(name)
    ev = parse(raw)
    assert ev.kind is kind
    assert ev.resource_uri == raw["data"]["resourceUri"] == ev.subject
    assert ev.topic == "/subscriptions/{subscription-id}"
    assert ev.claims["appid"] == "{ID}"
    assert ev.operation == raw["data"]["operationName"]


def test_attribution_names_the_user_the_operation_and_the_correlation() -> None:
    ev = parse(sample("delete-success.eventgrid", CONN, at=NOW))
    who = ev.attribution()
    assert who.who == "alice@contoso.example"
    assert who.operation == "Microsoft.Network/virtualHubs/bgpConnections/delete"
    assert who.correlation_id == "c0ffee00-0000-4000-8000-000000000001"
    assert who.source is ChangeSource.EVENT_GRID and who.at == NOW
    assert who.describe() == (
        "alice@contoso.example: bgpConnections/delete at 2026-12-02 12:00:00Z "
        "(event-grid, correlation c0ffee00-0000-4000-8000-000000000001)"
    )
    assert Attribution.from_json(who.to_json()) == who


def test_an_app_without_upn_is_named_by_its_app_id() -> None:
    ev = parse(sample("action-success.eventgrid", GW, at=NOW, app_id="11111111-2222-3333-4444-555555555555"))
    assert UPN not in ev.claims
    assert ev.attribution().who == ""
    assert ev.attribution().describe().startswith("app 11111111-2222-3333-4444-555555555555:")


def test_latest_attribution_is_the_newest() -> None:
    a = parse(sample("write-success.eventgrid", HUB, at=NOW)).attribution()
    b = parse(sample("write-success.eventgrid", HUB, at=NOW + timedelta(seconds=3), upn="bob@x")).attribution()
    assert latest([b, a]) == b and latest([]) is None


def test_the_validation_event_is_recognised() -> None:
    assert is_validation(published("subscription-validation.eventgrid"))
    assert not is_validation(published("write-success.eventgrid"))


# ---- malformed ----------------------------------------------------------------------------------


def _without(ev: dict[str, Any], *path: str) -> dict[str, Any]:
    node = ev
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return ev


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: _without(e, "id"),
        lambda e: _without(e, "topic"),
        lambda e: _without(e, "eventTime"),
        lambda e: _without(e, "data", "resourceUri"),
        lambda e: _without(e, "data", "subscriptionId"),
        lambda e: {**e, "data": "not an object"},
        lambda e: {**e, "eventTime": "yesterday"},
        lambda e: {**e, "eventTime": "2026-12-02T12:00:00"},  # no timezone
        lambda e: {**e, "id": 42},
        lambda e: {**e, "subject": "x" * 5000},
        lambda e: {**e, "data": {**e["data"], "claims": ["appid"]}},
        lambda e: {**e, "specversion": "0.3"},
        lambda e: [e],
    ],
)
def test_malformed_events_are_rejected_as_malformed(mangle: Any) -> None:
    with pytest.raises(Rejected) as err:
        parse(mangle(sample("write-success.eventgrid", HUB, at=NOW)))
    assert err.value.verdict is Verdict.MALFORMED


# ---- screening: forged, stale, self -------------------------------------------------------------


def test_an_event_about_a_watched_subscription_passes_the_screen() -> None:
    screen(parse(sample("write-success.eventgrid", HUB, at=NOW)), RULES, NOW)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: {**e, "topic": "/subscriptions/sub-evil"},
        lambda e: {**e, "data": {**e["data"], "subscriptionId": "sub-evil"}},
        lambda e: {**e, "subject": HUB.replace("sub-1", "sub-evil"), "topic": "/subscriptions/sub-evil"},
        lambda e: {**e, "subject": FW},  # subject and resourceUri disagree
        lambda e: {**e, "data": {**e["data"], "resourceUri": "/subscriptions/sub-2/resourceGroups/x"}},
    ],
)
def test_forged_topic_or_subscription_is_rejected(mangle: Any) -> None:
    with pytest.raises(Rejected) as err:
        screen(parse(mangle(sample("write-success.eventgrid", HUB, at=NOW))), RULES, NOW)
    assert err.value.verdict is Verdict.FORGED


def test_an_unwatched_subscription_is_forged_even_if_self_consistent() -> None:
    ev = parse(sample("write-success.eventgrid", HUB.replace("sub-1", "sub-9"), at=NOW))
    with pytest.raises(Rejected) as err:
        screen(ev, RULES, NOW)
    assert err.value.verdict is Verdict.FORGED


@pytest.mark.parametrize("age", [timedelta(minutes=16), timedelta(days=3), -timedelta(minutes=6)])
def test_old_or_future_events_are_stale(age: timedelta) -> None:
    with pytest.raises(Rejected) as err:
        screen(parse(sample("write-success.eventgrid", HUB, at=NOW - age)), RULES, NOW)
    assert err.value.verdict is Verdict.STALE


@pytest.mark.parametrize(
    "who",
    [
        {"app_id": OWN_APP},
        {"app_id": OWN_APP.upper()},
        {"app_id": "x", "object_id": OWN_APP},
        {"app_id": "x", "object_id": OWN_APP.replace("-", "")},
    ],
)
def test_the_reconcilers_own_calls_are_self(who: dict[str, str]) -> None:
    # Its route queries are ARM POSTs (ResourceActionSuccess) and its fixes are writes.
    for name in ("action-success.eventgrid", "write-success.eventgrid"):
        with pytest.raises(Rejected) as err:
            screen(parse(sample(name, CONN, at=NOW, **who)), RULES, NOW)
        assert err.value.verdict is Verdict.SELF


def test_self_is_recognised_by_the_role_assignment_principal_too() -> None:
    raw = sample("action-success.eventgrid", CONN, at=NOW, app_id="x", object_id="y")
    raw["data"]["authorization"]["evidence"]["principalId"] = OWN_APP.replace("-", "")
    with pytest.raises(Rejected):
        screen(parse(raw), RULES, NOW)
    assert raw["data"]["claims"][OID] == "y"


# ---- mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "kind"),
    [
        (HUB, WatchedKind.HUB),
        (CONN, WatchedKind.BGP_CONNECTION),
        (f"{HUB}/ipConfigurations/ipconfig1", WatchedKind.HUB),
        (FW, WatchedKind.FIREWALL),
        (GW, WatchedKind.GATEWAY),
        (VNET, WatchedKind.VNET),
        (SUBNET, WatchedKind.SUBNET),
        (RT, WatchedKind.ROUTE_TABLE),
        (f"{RT}/routes/default", WatchedKind.ROUTE_TABLE),
        (HUB.upper(), WatchedKind.HUB),  # ARM IDs are case-insensitive
    ],
)
def test_each_watched_resource_maps_to_exactly_its_target(resource: str, kind: WatchedKind) -> None:
    hits = ResourceIndex(state()).affected(resource)
    assert [(h.target, h.kind) for h in hits] == [("hub-weu", kind)]


@pytest.mark.parametrize(
    "resource",
    [
        f"{NET}/virtualHubs/ars-hub-2",  # a prefix of the name is not the resource
        f"{NET}/azureFirewalls/fw-hub-old",
        f"{VNET}/subnets/AppSubnet",
        f"{NET}/virtualNetworks/spoke-vnet",
        "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Storage/storageAccounts/diag",
        "/subscriptions/sub-1/resourceGroups/rg-other/providers/Microsoft.Network/routeTables/rt",
        "/subscriptions/sub-1",
        "not a resource id",
    ],
)
def test_unrelated_resources_map_to_nothing(resource: str) -> None:
    assert ResourceIndex(state()).affected(resource) == ()


def test_a_shared_resource_maps_to_every_target_that_uses_it() -> None:
    shared = state(firewall={"name": "fw-hub", "resource_group": "rg-hub"})
    hits = ResourceIndex(shared).affected(FW)
    assert [h.target for h in hits] == ["hub-neu", "hub-weu"]


def test_subject_prefixes_cover_the_design_per_subscription() -> None:
    prefixes = subject_prefixes(state())["sub-1"]
    assert HUB.lower() in prefixes and FW.lower() in prefixes and VNET.lower() in prefixes
    assert SUBNET.lower() not in prefixes  # covered by its VNet's prefix
    assert f"{NET}/routeTables/".lower() in prefixes
    assert all(any(r.lower().startswith(p) for p in prefixes) for r in (CONN, GW, SUBNET, RT))


# ---- coalescing ---------------------------------------------------------------------------------

PACE = Pacing(settle_s=2.0, min_interval_s=5.0, lost_after_s=300.0)


def test_first_event_enqueues_after_the_settle_delay() -> None:
    assert decide(None, NOW, PACE) == Enqueue(2.0)


def test_events_while_a_pass_is_pending_join_it() -> None:
    pending = Marker(True, NOW - timedelta(seconds=1))
    assert isinstance(decide(pending, NOW, PACE), Coalesce)


def test_a_pass_just_run_stretches_the_delay_to_the_minimum_interval() -> None:
    ran = Marker(False, NOW - timedelta(seconds=10), NOW - timedelta(seconds=1))
    assert decide(ran, NOW, PACE) == Enqueue(4.0)
    assert decide(Marker(False, None, NOW - timedelta(seconds=60)), NOW, PACE) == Enqueue(2.0)


def test_a_pending_marker_whose_message_was_lost_is_replaced() -> None:
    lost = Marker(True, NOW - timedelta(seconds=301))
    assert isinstance(decide(lost, NOW, PACE), Enqueue)
