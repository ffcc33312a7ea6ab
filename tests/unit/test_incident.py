"""Grouping by cause: the rule table, table-tested."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.alerts import Kind, Notification
from reconciler.drift import Drift, DriftCode, Severity
from reconciler.incident import CAUSES, group
from reconciler.runbook import RUNBOOK

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def n(code: DriftCode, subject: str, kind: Kind = Kind.FIRING, target: str = "hub") -> Notification:
    d = Drift(target, code, subject, "")
    return Notification(kind, target, d.identity, code, subject, d.severity, "", "", "", T0)


C = DriftCode
NH0 = n(C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=IN_0/prefix=0.0.0.0/0")
NH1 = n(C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=IN_1/prefix=0.0.0.0/0")
GWL = n(C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0")
GWA = n(C.GATEWAY_NOT_ADVERTISING, "gateway=ergw/onprem=10.0.0.12/prefix=0.0.0.0/0")
B2B = n(C.BRANCH_TO_BRANCH_DISABLED, "route_server=ars")
DOWN0 = n(C.PEER_DOWN, "peer=nva1/instance=IN_0")
DOWN1 = n(C.PEER_DOWN, "peer=nva1/instance=IN_1")
MISS0 = n(C.ROUTE_MISSING, "peer=nva1/instance=IN_0/prefix=0.0.0.0/0")
MISS1 = n(C.ROUTE_MISSING, "peer=nva1/instance=IN_1/prefix=0.0.0.0/0")
MISS_OTHER = n(C.ROUTE_MISSING, "peer=nva2/instance=IN_0/prefix=0.0.0.0/0")
RS = n(C.ROUTE_SERVER_UNHEALTHY, "route_server=ars")
FW = n(C.FIREWALL_UNHEALTHY, "firewall=fw")
BLIND = n(C.OBSERVATION_FAILED, "reconciler=blind", Kind.BLIND)
FAILED = n(C.PEER_FAILED, "peer=nva1")
UDR = n(C.UDR_INVARIANT_BROKEN, "subnet=v:AzureFirewallSubnet/prefix=0.0.0.0/0")


def shape(notes: list[Notification]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    return [(tuple(sorted(c.identity for c in i.causes)), tuple(sorted(q.identity for q in i.consequences)))
            for i in group(notes)]


def ids(*notes: Notification) -> tuple[str, ...]:
    return tuple(sorted(x.identity for x in notes))


@pytest.mark.parametrize(("notes", "expected"), [
    # firewall IP changed: the wrong next hop on both instances is the cause; the gateway follows
    ([GWL, NH0, GWA, NH1], [(ids(NH0, NH1), ids(GWL, GWA))]),
    ([B2B, GWL, GWA], [(ids(B2B), ids(GWL, GWA))]),
    # a session down on one instance explains the route missing on that instance only
    ([DOWN0, MISS0, MISS1], [(ids(DOWN0), ids(MISS0)), (ids(MISS1), ())]),
    ([DOWN0, DOWN1, MISS0, MISS1], [(ids(DOWN0, DOWN1), ids(MISS0, MISS1))]),
    ([RS, NH0, GWL, FW, DOWN0, UDR], [(ids(RS), ids(NH0, GWL, FW, DOWN0, UDR))]),
    ([FW, NH0, NH1, GWL], [(ids(FW), ids(NH0, NH1, GWL))]),
    ([FAILED, DOWN0, DOWN1, MISS0, MISS_OTHER], [(ids(FAILED), ids(DOWN0, DOWN1, MISS0)), (ids(MISS_OTHER), ())]),
    ([BLIND], [(ids(BLIND), ())]),
    ([UDR, B2B], [(ids(B2B), ()), (ids(UDR), ())]),
])
def test_grouping_by_cause(notes: list[Notification], expected: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> None:
    assert sorted(shape(notes)) == sorted(expected)


def test_every_notification_lands_in_exactly_one_incident() -> None:
    everything = [NH0, NH1, GWL, GWA, B2B, DOWN0, DOWN1, MISS0, MISS1, MISS_OTHER, RS, FW, BLIND, FAILED, UDR]
    members = [m.identity for i in group(everything) for m in i.members]
    assert sorted(members) == sorted(x.identity for x in everything)


def test_kinds_and_targets_are_never_mixed() -> None:
    resolved_gw = n(C.GATEWAY_NOT_LEARNING, "gateway=ergw/prefix=0.0.0.0/0", Kind.RESOLVED)
    other_target = n(C.GATEWAY_NOT_ADVERTISING, "gateway=ergw/onprem=10.0.0.12/prefix=0.0.0.0/0", target="hub2")
    incidents = group([NH0, resolved_gw, other_target])
    assert len(incidents) == 3


def test_incident_severity_is_the_worst_of_its_members() -> None:
    loop = n(C.ROUTE_REJECTED_LOOP, "peer=nva1/instance=IN_0/prefix=0.0.0.0/0")
    [incident] = group([DOWN0, loop])
    assert incident.severity == Severity.CRITICAL


def test_cause_table_has_no_self_or_cyclic_rules() -> None:
    edges = {(r.cause, c) for r in CAUSES for c in r.consequences}
    assert all(a != b for a, b in edges)
    closure = set(edges)
    while True:
        more = {(a, d) for a, b in closure for c, d in closure if b == c} - closure
        if not more:
            break
        closure |= more
    assert all(a != b for a, b in closure)


def test_runbook_has_an_entry_for_every_code() -> None:
    assert set(RUNBOOK) == set(DriftCode)
    for code, book in RUNBOOK.items():
        assert book.meaning and book.check and book.blade and book.fix, code
        assert book.check.startswith(("az ", "vtysh ")), code


def test_only_the_check_names_what_was_observed() -> None:
    """cards._runbook fills {peer} {gateway} {firewall} {vnet} {subnet} from drift subjects (names
    observed in Azure) and makes only the check inert (cards.untrusted); meaning, blade and fix are
    shown as written, so they must not carry those placeholders."""
    observed = ("{peer}", "{gateway}", "{firewall}", "{vnet}", "{subnet}")
    for code, book in RUNBOOK.items():
        for text in (book.meaning, book.blade, book.fix):
            assert not any(p in text for p in observed), (code, text)
