"""Pure rendering, validation and read-back checks of the NVA agent (no FRR, no I/O)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from nva_agent import render, state
from nva_agent.models import BgpIntent

# What FRR 8.4.4 prints for an NVA the agent configured before (its nva-agent-* objects), broken:
# no network statement of the agent's, next hop of the wrong firewall, a prefix the intent no
# longer has; plus operator lines it must not touch (an unbound legacy rmap-azure-asns, an
# SD-WAN neighbor with its own outbound map, an operator network statement).
RUNNING = """\
Building configuration...

Current configuration:
!
frr version 8.4.4
frr defaults traditional
hostname vm
no ipv6 forwarding
service integrated-vtysh-config
!
ip route 192.0.2.0/24 blackhole
!
router bgp 65001
 bgp router-id 10.0.1.4
 coalesce-time 100
 timers bgp 1 3
 neighbor 10.0.2.4 remote-as 65515
 neighbor 10.0.2.4 description ars-instance-0
 neighbor 10.0.2.4 ebgp-multihop 255
 neighbor 10.0.2.4 timers connect 1
 neighbor 10.9.9.9 remote-as 65444
 neighbor 10.9.9.9 description sdwan
 !
 address-family ipv4 unicast
  network 10.88.0.0/16 route-map nva-agent-originate
  network 10.99.0.0/16
  neighbor 10.0.2.4 route-map rmap-bogon-asns in
  neighbor 10.0.2.4 route-map nva-agent-ars-out out
  neighbor 10.9.9.9 route-map rmap-sdwan out
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor 10.9.9.9 activate
 exit-address-family
exit
!
router bgp 65001 vrf blue
 bgp router-id 10.0.1.4
exit
!
ip prefix-list default-route seq 5 permit 0.0.0.0/0
ip prefix-list nva-agent-prefixes seq 5 permit 0.0.0.0/0
ip prefix-list nva-agent-prefixes seq 10 permit 10.88.0.0/16
!
bgp as-path access-list azure-asns seq 5 permit _65515_
bgp as-path access-list bogon-asns seq 5 permit _0_
bgp as-path access-list nva-agent-ars-asns seq 5 permit _65515_
!
route-map rmap-bogon-asns deny 5
 match as-path bogon-asns
exit
!
route-map rmap-bogon-asns permit 10
exit
!
route-map rmap-azure-asns deny 5
 match as-path azure-asns
exit
!
route-map rmap-azure-asns permit 10
 match ip address prefix-list default-route
 set ip next-hop 10.0.3.5
exit
!
route-map rmap-azure-asns permit 20
exit
!
route-map nva-agent-ars-out deny 5
 match as-path nva-agent-ars-asns
exit
!
route-map nva-agent-ars-out permit 10
 match ip address prefix-list nva-agent-prefixes
 set ip next-hop 10.0.3.5
exit
!
route-map nva-agent-ars-out permit 20
exit
!
route-map nva-agent-originate permit 10
exit
!
route-map rmap-sdwan permit 10
exit
!
line vty
!
end
"""

OPERATOR_LINES = [
    "hostname vm",
    "ip route 192.0.2.0/24 blackhole",
    "ip prefix-list default-route seq 5 permit 0.0.0.0/0",
    "bgp as-path access-list bogon-asns seq 5 permit _0_",
    "route-map rmap-bogon-asns deny 5",
    " match as-path bogon-asns",
    "route-map rmap-bogon-asns permit 10",
    "route-map rmap-sdwan permit 10",
    "bgp as-path access-list azure-asns seq 5 permit _65515_",
    "route-map rmap-azure-asns permit 10",
    " set ip next-hop 10.0.3.5",
    "route-map rmap-azure-asns permit 20",
    "  network 10.99.0.0/16",
    " bgp router-id 10.0.1.4",
    " timers bgp 1 3",
    " neighbor 10.0.2.4 description ars-instance-0",
    " neighbor 10.0.2.4 timers connect 1",
    " neighbor 10.9.9.9 remote-as 65444",
    "  neighbor 10.0.2.4 route-map rmap-bogon-asns in",
    "  neighbor 10.9.9.9 route-map rmap-sdwan out",
    " address-family ipv6 unicast",
    "  neighbor 10.9.9.9 activate",
    "router bgp 65001 vrf blue",
    "line vty",
]


def intent(**overrides: Any) -> BgpIntent:
    body: dict[str, Any] = {
        "local_asn": 65001,
        "neighbors": [{"ip": "10.0.2.5", "asn": 65515}, {"ip": "10.0.2.4", "asn": 65515}],
        "prefixes": ["0.0.0.0/0"],
        "next_hop": "10.0.3.4",
    }
    body.update(overrides)
    return BgpIntent.model_validate(body)


def lines(text: str) -> list[str]:
    return text.splitlines()


# ------------------------------------------------------------------------------- rendering
def test_rendering_is_deterministic_and_a_fixed_point() -> None:
    once = render.render(RUNNING, intent())
    assert render.render(RUNNING, intent()) == once
    assert render.render(once, intent()) == once
    assert render.changes(render.parse(once), render.parse(render.render(once, intent()))) == []


def test_neighbor_order_in_the_intent_does_not_change_the_output() -> None:
    reordered = intent(neighbors=[{"ip": "10.0.2.4", "asn": 65515}, {"ip": "10.0.2.5", "asn": 65515}])
    assert render.render(RUNNING, reordered) == render.render(RUNNING, intent())


def test_operator_lines_the_agent_does_not_manage_survive() -> None:
    out = lines(render.render(RUNNING, intent()))
    for line in OPERATOR_LINES:
        assert line in out, line


def test_the_intent_is_rendered_with_the_next_hop_for_its_prefixes_only() -> None:
    out = render.render(RUNNING, intent())
    assert (
        "route-map nva-agent-ars-out permit 10\n description nva-agent: the intent's prefixes\n"
        " match ip address prefix-list nva-agent-prefixes\n set ip next-hop 10.0.3.4\n"
    ) in out
    assert "ip prefix-list nva-agent-prefixes seq 5 permit 0.0.0.0/0" in lines(out)
    assert "10.88.0.0/16" not in out  # the agent's own network and prefix-list entry for it are gone
    assert "route-map nva-agent-ars-out deny 5\n description nva-agent: never send Route Server its routes\n" in out
    assert "bgp as-path access-list nva-agent-ars-asns seq 5 permit _65515_" in lines(out)
    assert "  network 0.0.0.0/0 route-map nva-agent-originate" in lines(out)
    for ip in ("10.0.2.4", "10.0.2.5"):
        assert f" neighbor {ip} remote-as 65515" in lines(out)
        assert f" neighbor {ip} ebgp-multihop 255" in lines(out)
        assert f" neighbor {ip} solo" in lines(out)
        assert f"  neighbor {ip} route-map nva-agent-ars-out out" in lines(out)


def test_the_outbound_route_map_ends_in_an_explicit_deny() -> None:
    out = lines(render.render(RUNNING, intent()))
    entries = [ln for ln in out if ln.startswith("route-map nva-agent-ars-out ")]
    assert entries == [
        "route-map nva-agent-ars-out deny 5",
        "route-map nva-agent-ars-out permit 10",
        "route-map nva-agent-ars-out deny 100",
    ]
    assert "route-map nva-agent-ars-out permit 20" not in out  # someone's catch-all is not kept


def test_an_operator_network_for_an_intent_prefix_is_kept_unmarked() -> None:
    running = RUNNING.replace("  network 10.99.0.0/16\n", "  network 10.99.0.0/16\n  network 0.0.0.0/0\n")
    out = lines(render.render(running, intent()))
    assert "  network 0.0.0.0/0" in out
    assert "  network 0.0.0.0/0 route-map nva-agent-originate" not in out


@pytest.mark.parametrize(
    "line",
    [
        "  neighbor 10.0.2.4 route-map rmap-azure-asns out",
        "  neighbor 10.0.2.5 default-originate",
        "  neighbor 10.0.2.4 unsuppress-map rmap-sdwan",
        " neighbor 10.0.2.4 peer-group ars",
    ],
    ids=["operator-route-map-out", "default-originate", "unsuppress-map", "peer-group"],
)
def test_outbound_policy_the_agent_did_not_write_is_a_conflict(line: str) -> None:
    anchor = "  neighbor 10.0.2.4 route-map rmap-bogon-asns in\n" if line.startswith("  ") else " timers bgp 1 3\n"
    running = RUNNING.replace("  neighbor 10.0.2.4 route-map nva-agent-ars-out out\n", "").replace(
        anchor, anchor + line + "\n"
    )
    with pytest.raises(render.OutboundConflict) as exc:
        render.render(running, intent())
    assert exc.value.conflicts == [line.strip()]


def test_policy_objects_come_before_router_bgp() -> None:
    out = lines(render.render(RUNNING, intent()))
    first_bgp = out.index("router bgp 65001")
    for line in (
        "route-map nva-agent-ars-out deny 5",
        "route-map rmap-bogon-asns permit 10",
        "ip prefix-list default-route seq 5 permit 0.0.0.0/0",
    ):
        assert out.index(line) < first_bgp, line
    assert out.index("router bgp 65001") < out.index("router bgp 65001 vrf blue")


def test_a_new_neighbor_gets_remote_as_before_any_other_line_about_it() -> None:
    out = lines(render.render(RUNNING, intent()))
    assert out.index(" neighbor 10.0.2.5 remote-as 65515") < out.index(
        "  neighbor 10.0.2.5 route-map nva-agent-ars-out out"
    )
    assert out.index(" neighbor 10.0.2.4 remote-as 65515") < out.index(" neighbor 10.0.2.4 description ars-instance-0")


def test_withdrawing_removes_the_agents_networks_and_the_next_hop_entry() -> None:
    out = render.render(RUNNING, intent(prefixes=[]))
    assert "route-map nva-agent-originate\n" not in out.replace("route-map nva-agent-originate permit", "")
    assert "nva-agent-prefixes" not in out
    assert "set ip next-hop 10.0.3.4" not in out
    assert "  network 10.99.0.0/16" in lines(out)  # the operator's own
    assert "route-map nva-agent-ars-out deny 5" in lines(out)  # still never hand 65515 its routes back
    assert "route-map nva-agent-ars-out deny 100" in lines(out)


def test_changes_name_what_is_added_and_removed() -> None:
    new = render.render(RUNNING, intent())
    changes = render.changes(render.parse(RUNNING), render.parse(new))
    assert "+ network 0.0.0.0/0 route-map nva-agent-originate" in changes
    assert "- network 10.88.0.0/16 route-map nva-agent-originate" in changes
    assert "- network 10.99.0.0/16" not in changes
    assert "+ neighbor 10.0.2.5 remote-as 65515" in changes
    assert "- route-map nva-agent-ars-out permit 10 | set ip next-hop 10.0.3.5" in changes
    assert "+ route-map nva-agent-ars-out permit 10 | set ip next-hop 10.0.3.4" in changes
    assert "- route-map nva-agent-ars-out permit 20" in changes
    assert not [c for c in changes if "rmap-azure-asns" in c or ("azure-asns seq" in c and "nva-agent" not in c)]


def test_another_running_local_as_is_refused() -> None:
    with pytest.raises(render.AsnMismatch, match="65001"):
        render.render(RUNNING, intent(local_asn=65002))


def test_a_router_without_bgp_gets_a_router_bgp_block() -> None:
    out = render.render("frr version 8.4.4\nhostname vm\n!\nend\n", intent())
    assert "router bgp 65001" in lines(out)
    assert "  network 0.0.0.0/0 route-map nva-agent-originate" in lines(out)


def test_the_canonical_form_keeps_content() -> None:
    canon = render.canonical(RUNNING)
    assert render.changes(render.parse(RUNNING), render.parse(canon)) == []


def test_the_config_hash_ignores_frr_banner_lines() -> None:
    bare = RUNNING.replace("Building configuration...\n\nCurrent configuration:\n", "")
    assert render.config_hash(RUNNING) == render.config_hash(bare)
    assert render.config_hash(RUNNING) != render.config_hash(RUNNING.replace("10.0.3.5", "10.0.3.6"))


prefixes = st.builds(
    lambda a, n: str(ipaddress.IPv4Network((a, n), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)


@given(
    ps=st.lists(prefixes, max_size=6, unique=True),
    nh=st.one_of(st.none(), st.ip_addresses(v=4).map(str)),
    ips=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=4, unique=True),
)
def test_any_valid_intent_renders_to_a_fixed_point_that_keeps_operator_lines(
    ps: list[str], nh: str | None, ips: list[str]
) -> None:
    i = intent(prefixes=ps, next_hop=nh, neighbors=[{"ip": ip, "asn": 65515} for ip in ips])
    once = render.render(RUNNING, i)
    assert render.render(once, i) == once
    out = lines(once)
    for line in ("route-map rmap-bogon-asns deny 5", "ip route 192.0.2.0/24 blackhole", "line vty"):
        assert line in out
    ours = sorted(ln.split()[1] for ln in out if ln.startswith("  network ") and ln.endswith("nva-agent-originate"))
    assert ours == sorted(p for p in ps if p != "10.99.0.0/16")  # the operator already originates that one
    assert "  network 10.99.0.0/16" in out


# ------------------------------------------------------------------------------- validation
BAD = {
    "extra field": {"color": "red"},
    "neighbor extra field": {"neighbors": [{"ip": "10.0.2.4", "asn": 65515, "x": 1}]},
    "ip with newline": {"neighbors": [{"ip": "10.0.2.4\nend", "asn": 65515}]},
    "ip with leading zero": {"neighbors": [{"ip": "010.0.2.4", "asn": 65515}]},
    "ipv6 neighbor": {"neighbors": [{"ip": "fe80::1", "asn": 65515}]},
    "prefix with semicolon": {"prefixes": ["0.0.0.0/0;reboot"]},
    "prefix with bang": {"prefixes": ["0.0.0.0/0 !"]},
    "prefix without length": {"prefixes": ["10.0.0.0"]},
    "prefix with host bits": {"prefixes": ["10.0.0.1/8"]},
    "duplicate prefixes": {"prefixes": ["0.0.0.0/0", "0.0.0.0/0"]},
    "duplicate neighbors": {"neighbors": [{"ip": "10.0.2.4", "asn": 1}, {"ip": "10.0.2.4", "asn": 2}]},
    "no neighbors": {"neighbors": []},
    "asn zero": {"local_asn": 0},
    "asn too large": {"local_asn": 2**32},
    "asn as string": {"local_asn": "65001"},
    "asn as bool": {"local_asn": True},
    "reserved AS_TRANS": {"local_asn": 23456},
    "reserved ARS": {"local_asn": 65515},
    "reserved documentation": {"local_asn": 64500},
    "reserved last": {"local_asn": 4294967295},
    "neighbor asn zero": {"neighbors": [{"ip": "10.0.2.4", "asn": 0}]},
    "next hop name": {"next_hop": "firewall"},
    "dry run string": {"dry_run": "false"},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_validation_rejects(case: str) -> None:
    with pytest.raises(ValidationError):
        intent(**BAD[case])


def test_validation_accepts_the_design_intent_and_a_4_byte_neighbor_asn() -> None:
    i = intent(neighbors=[{"ip": "10.0.2.4", "asn": 4200000000}], prefixes=["0.0.0.0/1", "128.0.0.0/1"])
    assert i.neighbors[0].asn == 4200000000
    assert i.prefixes == ["0.0.0.0/1", "128.0.0.0/1"]


# ------------------------------------------------------------------------------- read-back
SUMMARY = {
    "ipv4Unicast": {
        "routerId": "10.0.1.4",
        "as": 65001,
        "peers": {
            "10.0.2.5": {"remoteAs": 65515, "state": "Established", "peerUptimeMsec": 2000},
            "10.0.2.4": {"remoteAs": 65515, "state": "Established", "peerUptimeMsec": 3000},
        },
    }
}


def adv(next_hop: str, *prefixes: str) -> dict[str, Any]:
    return {"advertisedRoutes": {p: {"network": p, "nextHop": next_hop, "path": ""} for p in prefixes}}


def test_state_reports_the_as_path_as_sent_on_the_wire() -> None:
    s = state.build_state(
        SUMMARY, {"10.0.2.4": adv("10.0.3.4", "0.0.0.0/0"), "10.0.2.5": adv("10.0.3.4")}, "sha256:" + "0" * 64
    )
    assert [n.ip for n in s.neighbors] == ["10.0.2.4", "10.0.2.5"]
    assert s.neighbors[0].advertised[0].as_path == "65001"
    assert (s.local_asn, s.router_id, s.neighbors[1].advertised) == (65001, "10.0.1.4", [])


def test_read_back_problems_name_the_neighbor_and_what_is_wrong() -> None:
    s = state.build_state(
        SUMMARY,
        {"10.0.2.4": adv("10.0.3.5", "0.0.0.0/0"), "10.0.2.5": adv("10.0.3.4", "0.0.0.0/0", "10.0.0.0/16")},
        "sha256:" + "0" * 64,
    )
    issues = state.problems(s, intent())
    assert "neighbor 10.0.2.4 gets 0.0.0.0/0 via 10.0.3.5, not 10.0.3.4" in issues
    assert "neighbor 10.0.2.5 is also sent 10.0.0.0/16" in issues
    good = state.build_state(
        SUMMARY, {ip: adv("10.0.3.4", "0.0.0.0/0") for ip in ("10.0.2.4", "10.0.2.5")}, "sha256:" + "1" * 64
    )
    assert state.problems(good, intent()) == []
