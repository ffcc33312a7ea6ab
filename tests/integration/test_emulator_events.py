"""The emulator's Event Grid publisher: events in the documented shape (compared with Microsoft's
published samples), raised by real ARM calls with the caller's identity, delivered after the
configured delay with Event Grid's header, lost on request."""

from __future__ import annotations

import time

from azure.mgmt.network.models import BgpConnection

from emulator import ArmEmulator
from emulator.events import ALICE, RECONCILER, EventPublisher, operation_for
from localenv.webhook import WebhookReceiver
from reconciler.events import parse
from tests.fixtures.emulator import network_client
from tests.fixtures.eventgrid import published

HUB = "/subscriptions/sub-1/resourceGroups/rg-hub/providers/Microsoft.Network/virtualHubs/ars-hub"


def test_events_have_the_published_shape_in_both_schemas() -> None:
    for schema, sample in (("eventgrid", "write-success.eventgrid"), ("cloudevents", "delete-success.cloudevents")):
        pub = EventPublisher(schema=schema)
        try:
            ev = pub.publish(HUB, "write", caller=ALICE)
        finally:
            pub.close()
        ref = published(sample)
        assert set(ev) == set(ref) - {"httpRequest"}
        assert set(ev["data"]) <= set(ref["data"]) and set(ev["data"]) >= set(ref["data"]) - {"httpRequest"}
        assert set(ev["data"]["authorization"]) == set(ref["data"]["authorization"])
        parsed = parse(ev)
        assert parsed.attribution().who == ALICE.upn and parsed.resource_uri == HUB


def test_operation_names_follow_arm() -> None:
    conn = f"{HUB}/bgpConnections/nva1"
    assert operation_for("PUT", conn) == ("write", conn, "Microsoft.Network/virtualHubs/bgpConnections/write")
    assert operation_for("DELETE", conn) == ("delete", conn, "Microsoft.Network/virtualHubs/bgpConnections/delete")
    assert operation_for("POST", f"{conn}/learnedRoutes") == (
        "action", conn, "Microsoft.Network/virtualHubs/bgpConnections/learnedRoutes/action",
    )  # fmt: skip
    assert operation_for("GET", conn) is None


async def test_arm_writes_publish_with_the_callers_identity_after_the_delay(
    emulator: ArmEmulator, webhook: WebhookReceiver
) -> None:
    pub = EventPublisher(webhook.url, delay_s=0.5)
    emulator.events = pub
    try:
        client = network_client(emulator)
        t0 = time.monotonic()
        poller = await client.virtual_hub_bgp_connection.begin_create_or_update(
            "rg-hub", "ars-hub", "nva9", BgpConnection(peer_ip="10.0.1.9", peer_asn=65009)
        )
        await poller.result()
        await client.close()
        got = webhook.wait_for(1, timeout=10)
        assert got[0].at - t0 >= 0.5
        assert got[0].headers.get("aeg-event-type") == "Notification"
        (event,) = got[0].json()
        assert event["eventType"] == "Microsoft.Resources.ResourceWriteSuccess"
        assert event["subject"].endswith("/bgpConnections/nva9")
        assert event["data"]["claims"]["appid"] == RECONCILER.app_id  # the emulator-token caller
    finally:
        emulator.events = None
        pub.close()


def test_a_dropped_event_is_never_delivered(webhook: WebhookReceiver) -> None:
    pub = EventPublisher(webhook.url)
    try:
        pub.drop_next()
        pub.publish(HUB, "write")
        pub.publish(HUB, "delete")
        assert pub.wait_idle(10)
        assert [r.json()[0]["eventType"] for r in webhook.wait_for(1)] == ["Microsoft.Resources.ResourceDeleteSuccess"]
        assert len(pub.published) == 2 and len(pub.delivered) == 1
    finally:
        pub.close()
