"""Probe NICs: the real effective route (effectiveRouteTable) judged, and compared with the computed one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from reconciler.diff import diff
from reconciler.drift import DriftCode as C
from reconciler.observed import EffectiveRoute, Observation, RouteEntry, SubnetRouting, Unknown
from reconciler.trace import Verdict, trace
from tests.unit.factories import FW, observation, target

NVA_SUBNET = "hub-vnet:NvaSubnet"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SYSTEM = (
    EffectiveRoute(("0.0.0.0/0",), "Default", "Active", "Internet", ()),
    EffectiveRoute(("10.0.0.0/8",), "Default", "Active", "None", ()),
)


def ars_default(hop: str = FW, state: str = "Active") -> EffectiveRoute:
    return EffectiveRoute(("0.0.0.0/0",), "VirtualNetworkGateway", state, "VirtualNetworkGateway", (hop,))


def udr_internet(state: str = "Active") -> EffectiveRoute:
    return EffectiveRoute(("0.0.0.0/0",), "User", state, "Internet", ())


def probed(**nics: Any) -> tuple[Any, Observation]:
    t = target(
        probes=[
            {"nic": "vm1-nic", "expect": "firewall"},
            {"nic": "nva1-nic", "expect": "internet", "vnet": "hub-vnet", "subnet": "NvaSubnet"},
        ],
    )
    nva_subnet = SubnetRouting(
        "hub-vnet", "NvaSubnet", "nva-rt", (RouteEntry("default-internet", "0.0.0.0/0", "Internet", None),), False
    )
    base = {
        # The system 0/0 lost its tie to Route Server's 0/0, as ARM lists it.
        "vm1-nic": (ars_default(), replace(SYSTEM[0], state="Invalid"), SYSTEM[1]),
        "nva1-nic": (udr_internet(), ars_default(state="Invalid"), replace(SYSTEM[0], state="Invalid"), SYSTEM[1]),
    }
    base.update(nics)
    obs = replace(observation(), nics=base, subnets={**observation().subnets, NVA_SUBNET: nva_subnet})
    return t, obs


def codes(t: Any, obs: Observation) -> set[tuple[C, str]]:
    return {(d.code, d.subject) for d in diff(t, obs) if d.code.value.startswith(("NIC_", "OBSERVATION"))}


def test_healthy_probes_are_no_drift_and_whole_paths() -> None:
    t, obs = probed()
    assert codes(t, obs) == set()
    (tr,) = trace(t, obs)
    assert tr.verdict is Verdict.OK
    assert [p.source for p in tr.paths][-2:] == ["vm1-nic", "nva1-nic"]


def test_workload_nic_going_direct_is_nic_route_wrong_and_the_root_cause() -> None:
    t, obs = probed(**{"vm1-nic": SYSTEM})  # Route Server's route is gone from the NIC, the rest looks fine
    assert codes(t, obs) == {(C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0")}
    (tr,) = trace(t, obs)
    vm = next(p for p in tr.paths if p.source == "vm1-nic")
    assert vm.root_cause is not None and vm.root_cause.id == "nic:vm1-nic"


def test_nva_nic_sending_internet_to_the_firewall_is_wrong_and_disagrees_with_the_computed_route() -> None:
    # ARM says the UDR lost (e.g. the route table was swapped under us), while the table we read says it wins.
    t, obs = probed(**{"nva1-nic": (ars_default(), udr_internet(state="Invalid"), *SYSTEM[1:])})
    assert codes(t, obs) == {
        (C.NIC_ROUTE_WRONG, "nic=nva1-nic/prefix=0.0.0.0/0"),
        (C.NIC_ROUTE_MISMATCH, "nic=nva1-nic/prefix=0.0.0.0/0"),
    }
    mismatch = next(d for d in diff(t, obs) if d.code is C.NIC_ROUTE_MISMATCH)
    assert mismatch.expected.startswith("computed: 0.0.0.0/0 -> Internet (UDR default-internet in nva-rt)")
    assert mismatch.observed.startswith("real: 0.0.0.0/0 -> VirtualNetworkGateway 10.0.3.4")


def test_unreadable_nic_is_observation_failed_only_and_an_unknown_hop() -> None:
    t, obs = probed(**{"vm1-nic": Unknown("nic.routes", "vm1-nic", "HTTP 500")})
    assert codes(t, obs) == {(C.OBSERVATION_FAILED, "read=nic.routes/resource=vm1-nic")}
    (tr,) = trace(t, obs)
    vm = next(p for p in tr.paths if p.source == "vm1-nic")
    assert vm.verdict is Verdict.UNKNOWN


def test_missing_nic_is_wrong() -> None:
    t, obs = probed(**{"vm1-nic": None})
    assert codes(t, obs) == {(C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0")}


def test_firewall_probe_is_not_judged_while_the_firewall_ip_is_unknown() -> None:
    t, obs = probed(**{"vm1-nic": SYSTEM})
    obs = replace(obs, firewall=Unknown("firewall.get", "fw-hub", "timeout"), firewall_ip=None)
    assert (C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0") not in codes(t, obs)


def test_a_probe_nic_following_a_stale_route_is_folded_under_the_route_drift() -> None:
    # The same order as the trace: the NVA's route is the cause, the NIC's real route a consequence.
    from reconciler.alerts import Kind, Notification
    from reconciler.drift import Drift
    from reconciler.incident import group

    def note(code: C, subject: str) -> Notification:
        d = Drift("hub", code, subject, "")
        return Notification(Kind.FIRING, "hub", d.identity, code, subject, d.severity, "", "", "", NOW)

    route = note(C.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0")
    nic = note(C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0")
    (incident,) = group([route, nic])
    assert [c.identity for c in incident.causes] == [route.identity]
    assert [q.identity for q in incident.consequences] == [nic.identity]


def test_an_ecmp_entry_with_a_second_next_hop_elsewhere_is_wrong() -> None:
    # One effective-route entry lists every ECMP next hop (nextHopIpAddress is a list); only the first
    # was read, so half the workload's internet traffic going to 10.9.9.9 passed as "to the firewall".
    ecmp = EffectiveRoute(("0.0.0.0/0",), "VirtualNetworkGateway", "Active", "VirtualNetworkGateway", (FW, "10.9.9.9"))
    t, obs = probed(**{"vm1-nic": (ecmp, replace(SYSTEM[0], state="Invalid"), SYSTEM[1])})
    assert (C.NIC_ROUTE_WRONG, "nic=vm1-nic/prefix=0.0.0.0/0") in codes(t, obs)
