"""The status page and the picture, rendered from values (no browser here; see tests/e2e for one)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import http_api
from reconciler.causes import root_cause
from reconciler.diff import diff
from reconciler.drift import DriftCode
from reconciler.ledger_state import DriftRecord, DriftStatus, PassRecord
from reconciler.observed import Hub
from reconciler.picture import hop_anchor, trace_svg
from reconciler.status_page import PageData, cause_hops, incidents, render, static_file
from reconciler.trace import trace
from reconciler.trigger import Trigger
from tests.unit.factories import ARS, observation, target
from tests.unit.test_diff import CASES

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def record(code: str, subject: str, **kw: object) -> DriftRecord:
    rec = DriftRecord(
        identity=f"hub|{code}|{subject}",
        target="hub",
        code=code,
        subject=subject,
        severity="critical",
        status=DriftStatus.OPEN,
        first_seen=NOW - timedelta(hours=2),
        last_seen=NOW,
        resolved_at=None,
        occurrences=3,
        message="m",
        expected="e",
        observed="<b>allowBranchToBranchTraffic false</b>",
    )
    return replace(rec, **kw)  # type: ignore[arg-type]


def broken() -> PageData:
    obs = replace(observation(), hub=Hub("Succeeded", "Provisioned", 65515, ARS, False, "ExpressRoute"))
    b2b = record(DriftCode.BRANCH_TO_BRANCH_DISABLED.value, "route_server=ars-hub")
    passes = [PassRecord("p1", Trigger.TIMER, NOW - timedelta(minutes=5), 0.4, ("hub",), {"drifts": 3})]
    events = [
        {"kind": "opened", "at": NOW - timedelta(days=3), "identity": "hub|PEER_DOWN|peer=nva1", "code": "PEER_DOWN",
         "severity": "critical"},
        {"kind": "resolved", "at": NOW - timedelta(days=2), "identity": "hub|PEER_DOWN|peer=nva1"},
    ]  # fmt: skip
    return PageData(NOW, trace(target(), obs), [b2b], passes, events, {"hub": target()})


def test_page_links_each_drift_to_its_root_cause_hop_and_runbook() -> None:
    html = render(broken())
    anchor = hop_anchor("hub", "branch_to_branch")
    assert f'<tr id="{anchor}"' in html
    assert f'<a class="cause" href="#{anchor}">branch-to-branch (Route Server &lt;-&gt; gateway)</a>' in html
    assert '<details class="runbook"><summary>runbook</summary>check: <code>az network routeserver' in html


def open_records(obs_change: str) -> tuple[PageData, list[DriftRecord]]:
    case = next(c for c in CASES if c[0] == obs_change)
    obs = case[2](observation())
    drifts = diff(target(), obs)
    recs = [
        record(d.code.value, d.subject, identity=d.identity, target=d.target, severity=d.severity.value)
        for d in drifts
    ]
    return PageData(NOW, trace(target(), obs, drifts=drifts), recs, [], []), recs


def test_each_drift_s_cause_is_the_cards_root_cause_on_the_hop_that_shows_it() -> None:
    # The firewall moved: the NVA's next hop is stale, so the gateway learns the wrong one too;
    # the cards fold the gateway's drift under the NVA's (reconciler.causes), and so does the page.
    data, recs = open_records("firewall redeployed with new IP")
    causes = cause_hops(data)
    assert {hop.id for hop in causes.values()} == {"nva:nva1"}
    gateway = next(r for r in recs if r.code == DriftCode.GATEWAY_NOT_LEARNING.value)
    assert causes[gateway.identity].id == "nva:nva1"


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_the_page_names_the_cause_the_cards_group_under(case: str) -> None:
    data, recs = open_records(case)
    causes = cause_hops(data)
    facts = [replace(r, code=DriftCode(r.code)) for r in recs]
    hops = [h for t in data.traces for p in t.paths for h in p.hops]
    for f in facts:
        root = root_cause(f, facts)
        # the first hop that carries the cards' cause; none when that drift is beside the path
        shown = next((h for h in hops if any(d.identity == root.identity for d in h.drifts)), None)
        assert causes.get(f.identity) is shown


def test_the_page_fills_a_runbook_like_the_card_does() -> None:
    # One answer to "which names fill a runbook" (runbook.names_for): the target's resource group and
    # Route Server, not the placeholders.
    html = render(broken())
    assert "check: <code>az network routeserver show -g rg-hub -n ars-hub" in html
    assert "{rg}" not in html and "{rs}" not in html


def test_values_from_azure_are_escaped() -> None:
    html = render(broken())
    assert "<b>allowBranchToBranchTraffic" not in html
    assert "&lt;b&gt;allowBranchToBranchTraffic false&lt;/b&gt;" in html


def test_timeline_holds_past_and_open_incidents() -> None:
    data = broken()
    spans = incidents(data.events, data.drifts)
    assert [(i.code, i.end is None) for i in spans] == [("PEER_DOWN", False), ("BRANCH_TO_BRANCH_DISABLED", True)]
    assert render(data).count('class="incident') == 2


def test_picture_marks_the_root_cause_and_links_every_box() -> None:
    (tr,) = broken().traces
    svg = trace_svg(tr)
    assert svg.startswith("<svg")
    assert svg.count('class="hop broken root-cause"') == 1
    assert 'data-hop="branch_to_branch"' in svg
    assert svg.count('<a href="#hop-hub-') == sum(len(p.hops) for p in tr.paths)


@pytest.mark.parametrize("name", ["../desired.yaml", "status.css/..", "STATUS.CSS", "", "templates/status.html"])
def test_static_files_are_a_fixed_list(name: str) -> None:
    assert static_file(name) is None
    assert static_file("status.css") is not None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"prefix": "nope"}, "bad_prefix"),
        ({"prefix": "::/0"}, "bad_prefix"),
        ({"format": "png"}, "bad_format"),
        ({"format": "svg"}, "target_required"),
        ({"target": "nope"}, "unknown_target"),
        ({"extra": "1"}, "unknown_query_field"),
    ],
)
def test_trace_query_rejects_bad_input(params: dict[str, str], code: str) -> None:
    with pytest.raises(http_api.ApiError) as err:
        http_api.parse_trace_query(params, ["a", "b"])
    assert err.value.code == code


def test_trace_query_svg_of_the_only_target_needs_no_name() -> None:
    assert http_api.parse_trace_query({"format": "svg", "code": "k"}, ["a"]).svg


def test_untrusted_text_in_picture_attributes_is_escaped() -> None:
    """drawsvg escapes text but not attribute values; a drift identity carries an observed subject
    (an undeclared peer's name from ARM), and the page embeds the SVG as-is."""
    from xml.etree import ElementTree

    from reconciler.picture import Interval, timeline_svg

    hostile = 'hub|PEER_UNEXPECTED|peer=x"><script>alert(1)</script><a x="&amp;'
    svg = timeline_svg([Interval(hostile, "PEER_UNEXPECTED", "critical", NOW - timedelta(hours=1), None)], NOW)
    assert "<script>" not in svg
    bars = [e for e in ElementTree.fromstring(svg).iter() if e.get("data-identity") is not None]
    assert [b.get("data-identity") for b in bars] == [hostile]  # the value survives, as text
    events = [
        {"kind": k, "at": NOW - timedelta(hours=h), "identity": hostile} for k, h in (("opened", 2), ("resolved", 1))
    ]
    page = render(replace(broken(), events=events))
    assert "<script>" not in page and 'data-identity="hub|PEER_UNEXPECTED|peer=x&quot;&gt;&lt;script&gt;' in page
