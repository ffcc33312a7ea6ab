"""The alert state machine, driven pass by pass with a fake clock."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.alerts import (
    AlertRules,
    AlertState,
    Announced,
    Kind,
    Notification,
    Status,
    blind_identity,
    evaluate,
    undelivered,
)
from reconciler.drift import Drift, DriftCode, Severity

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
HUB = "hub-weu"

PEER_DOWN = Drift(HUB, DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_0", "session Idle",
                  expected="Connected", observed="Idle")
IN0 = "instance=RouteServiceRole_IN_0"
ROUTE_MISSING = Drift(HUB, DriftCode.ROUTE_MISSING, f"peer=nva1/{IN0}/prefix=0.0.0.0/0",
                      "default route not learned", expected="0.0.0.0/0 via 10.0.1.4", observed="absent")
ROUTE_OTHER_PEER = Drift(HUB, DriftCode.ROUTE_MISSING, f"peer=nva2/{IN0}/prefix=0.0.0.0/0",
                         "default route not learned from nva2")
NEXT_HOP = Drift(HUB, DriftCode.ROUTE_NEXT_HOP_WRONG, "peer=nva1/instance=10.0.0.5/prefix=0.0.0.0/0",
                 "next hop is not the firewall", expected="10.0.2.4", observed="10.0.1.4")
GATEWAY = Drift(HUB, DriftCode.GATEWAY_NOT_LEARNING, "gateway=vpngw/prefix=0.0.0.0/0", "gateway lacks route")
PEER_FAILED = Drift(HUB, DriftCode.PEER_FAILED, "peer=nva1", "bgpConnection Failed")
FIREWALL = Drift(HUB, DriftCode.FIREWALL_UNHEALTHY, "firewall=afw-hub", "firewall deallocated")
ARS = Drift(HUB, DriftCode.ROUTE_SERVER_UNHEALTHY, "route_server=ars-hub", "routing state Failed")
UDR = Drift(HUB, DriftCode.UDR_INVARIANT_BROKEN, "subnet=hub:AzureFirewallSubnet/prefix=0.0.0.0/0", "lost")
OTHER_TARGET = Drift("hub-neu", DriftCode.PEER_FAILED, "peer=nva9", "bgpConnection Failed")
READ_FAILED = Drift(HUB, DriftCode.OBSERVATION_FAILED, "read=bgp_peer_status/resource=ars-hub", "ARM 503")

RULES = AlertRules()  # production defaults: 180 s for PEER_DOWN/ROUTE_*, 0 for the rest


def roundtrip(states: Mapping[str, AlertState]) -> dict[str, AlertState]:
    """What a restart does: states go through JSON (as the outbox table stores them) and back."""
    text = json.dumps({k: v.to_dict() for k, v in states.items()})
    return {k: AlertState.from_dict(v) for k, v in json.loads(text).items()}


@dataclass
class Sim:
    """Runs passes at given offsets; optionally "restarts" (round-trips the states) between passes."""

    rules: AlertRules = RULES
    restart_between_passes: bool = False
    states: dict[str, AlertState] = field(default_factory=dict)
    targets: tuple[str, ...] = (HUB,)

    def at(
        self,
        seconds: float,
        *drifts: Drift,
        blind: Mapping[str, str] | None = None,
        actions: Mapping[str, tuple[str, str]] | None = None,
    ) -> list[Notification]:
        if self.restart_between_passes:
            self.states = roundtrip(self.states)
        self.states, notes = evaluate(
            self.states, list(drifts), blind or {}, self.targets, T0 + timedelta(seconds=seconds), self.rules,
            actions,
        )
        return notes


def kinds(notes: Sequence[Notification]) -> list[tuple[Kind, DriftCode]]:
    """What is announced on its own (folded consequences ride on their cause's card)."""
    return [(n.kind, n.code) for n in notes if not n.folded]


# (name, passes: [(t seconds, drifts present, expected (kind, code) list)])
Passes = list[tuple[float, tuple[Drift, ...], list[tuple[Kind, DriftCode]]]]
Scenario = tuple[str, Passes]

SCENARIOS: list[Scenario] = [
    ("peer_blip_shorter_than_bgp_hold_time_never_pages", [
        (0, (PEER_DOWN,), []),
        (60, (PEER_DOWN,), []),
        (120, (), []),
        (400, (), []),
    ]),
    ("peer_down_fires_after_hold_down_then_resolves", [
        (0, (PEER_DOWN,), []),
        (179, (PEER_DOWN,), []),
        (180, (PEER_DOWN,), [(Kind.FIRING, DriftCode.PEER_DOWN)]),
        (300, (PEER_DOWN,), []),
        (600, (), [(Kind.RESOLVED, DriftCode.PEER_DOWN)]),
        (900, (), []),
    ]),
    ("azure_side_drift_fires_on_first_pass", [
        (0, (PEER_FAILED,), [(Kind.FIRING, DriftCode.PEER_FAILED)]),
        (60, (), [(Kind.RESOLVED, DriftCode.PEER_FAILED)]),
    ]),
    ("reappearing_after_resolution_restarts_hold_down", [
        (0, (ROUTE_MISSING,), []),
        (200, (ROUTE_MISSING,), [(Kind.FIRING, DriftCode.ROUTE_MISSING)]),
        (300, (), [(Kind.RESOLVED, DriftCode.ROUTE_MISSING)]),
        (400, (ROUTE_MISSING,), []),
        (579, (ROUTE_MISSING,), []),
        (580, (ROUTE_MISSING,), [(Kind.FIRING, DriftCode.ROUTE_MISSING)]),
    ]),
    ("reminder_after_repeat_interval_and_not_before", [
        (0, (UDR,), [(Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN)]),
        (4 * 3600 - 1, (UDR,), []),
        (4 * 3600, (UDR,), [(Kind.REMINDER, DriftCode.UDR_INVARIANT_BROKEN)]),
        (4 * 3600 + 300, (UDR,), []),
        (8 * 3600, (UDR,), [(Kind.REMINDER, DriftCode.UDR_INVARIANT_BROKEN)]),
    ]),
    ("peer_down_mutes_route_drifts_of_that_peer_only", [
        (0, (PEER_DOWN, ROUTE_MISSING, ROUTE_OTHER_PEER), []),
        (180, (PEER_DOWN, ROUTE_MISSING, ROUTE_OTHER_PEER),
         [(Kind.FIRING, DriftCode.PEER_DOWN), (Kind.FIRING, DriftCode.ROUTE_MISSING)]),  # nva2's route
        (300, (ROUTE_MISSING, ROUTE_OTHER_PEER),  # peer back, route still missing: now it is news
         [(Kind.FIRING, DriftCode.ROUTE_MISSING), (Kind.RESOLVED, DriftCode.PEER_DOWN)]),
    ]),
    ("firewall_unhealthy_mutes_next_hop_and_gateway_not_other_codes", [
        (0, (FIREWALL, GATEWAY, PEER_FAILED), [(Kind.FIRING, DriftCode.FIREWALL_UNHEALTHY),
                                              (Kind.FIRING, DriftCode.PEER_FAILED)]),
        (0.5, (FIREWALL, GATEWAY, PEER_FAILED, NEXT_HOP), []),
        (400, (FIREWALL, GATEWAY, PEER_FAILED, NEXT_HOP), []),
        # The firewall heals and the peer is fixed; the wrong next hop outlives its cause and pages
        # on its own, with the gateway drift it explains folded onto its card (reconciler.causes).
        (500, (GATEWAY, NEXT_HOP), [
            (Kind.FIRING, DriftCode.ROUTE_NEXT_HOP_WRONG),
            (Kind.RESOLVED, DriftCode.FIREWALL_UNHEALTHY), (Kind.RESOLVED, DriftCode.PEER_FAILED),
        ]),
    ]),
    ("route_server_unhealthy_mutes_everything_else_of_the_target", [
        (0, (ARS, PEER_FAILED, FIREWALL, UDR, OTHER_TARGET),
         [(Kind.FIRING, DriftCode.PEER_FAILED), (Kind.FIRING, DriftCode.ROUTE_SERVER_UNHEALTHY)]),
        (60, (PEER_FAILED, FIREWALL, UDR, OTHER_TARGET), [
            (Kind.FIRING, DriftCode.FIREWALL_UNHEALTHY), (Kind.FIRING, DriftCode.PEER_FAILED),
            (Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN), (Kind.RESOLVED, DriftCode.ROUTE_SERVER_UNHEALTHY),
        ]),
    ]),
    ("resolution_of_an_announced_alert_is_sent_even_when_muted", [
        (0, (PEER_FAILED,), [(Kind.FIRING, DriftCode.PEER_FAILED)]),
        (60, (PEER_FAILED, ARS), [(Kind.FIRING, DriftCode.ROUTE_SERVER_UNHEALTHY)]),
        (120, (ARS,), [(Kind.RESOLVED, DriftCode.PEER_FAILED)]),
    ]),
]


def _scenario_targets(passes: Passes) -> tuple[str, ...]:
    return tuple(sorted({HUB} | {d.target for _, ds, _ in passes for d in ds}))


@pytest.mark.parametrize("restart", [False, True], ids=["same_process", "restart_every_pass"])
@pytest.mark.parametrize(("name", "passes"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario(name: str, passes: Passes, restart: bool) -> None:
    sim = Sim(restart_between_passes=restart, targets=_scenario_targets(passes))
    for t, drifts, expected in passes:
        got = kinds(sim.at(t, *drifts))
        assert sorted(got) == sorted(expected), f"{name} at t={t}: {got}"


def test_other_target_drift_is_its_own_card_source_not_muted_by_this_targets_route_server() -> None:
    sim = Sim(targets=(HUB, "hub-neu"))
    notes = sim.at(0, ARS, OTHER_TARGET)
    assert {(n.target, n.code) for n in notes} == {
        (HUB, DriftCode.ROUTE_SERVER_UNHEALTHY), ("hub-neu", DriftCode.PEER_FAILED)}


def test_resolved_says_how_long_it_lasted() -> None:
    sim = Sim()
    sim.at(0, PEER_DOWN)
    sim.at(200, PEER_DOWN)
    [resolved] = sim.at(725)
    assert resolved.kind == Kind.RESOLVED
    assert resolved.duration_s == 725
    assert resolved.first_seen == T0


def test_firing_carries_drift_details_and_reconciler_action() -> None:
    sim = Sim()
    sim.at(0, ROUTE_MISSING)
    [firing] = sim.at(180, ROUTE_MISSING, actions={ROUTE_MISSING.identity: ("re-announce 0.0.0.0/0", "ok")})
    assert firing.kind == Kind.FIRING
    assert (firing.expected, firing.observed) == ("0.0.0.0/0 via 10.0.1.4", "absent")
    assert firing.severity == Severity.CRITICAL
    assert (firing.action, firing.outcome) == ("re-announce 0.0.0.0/0", "ok")
    assert firing.duration_s is None


def test_reminder_reports_duration_so_far() -> None:
    sim = Sim()
    sim.at(0, UDR)
    [reminder] = sim.at(4 * 3600, UDR)
    assert reminder.kind == Kind.REMINDER and reminder.duration_s == 4 * 3600


def test_hold_down_is_configurable_per_code() -> None:
    rules = AlertRules(hold_down={DriftCode.PEER_DOWN: timedelta(seconds=30)},
                       default_hold_down=timedelta(seconds=600))
    sim = Sim(rules=rules)
    assert sim.at(0, PEER_DOWN, UDR) == []
    assert kinds(sim.at(30, PEER_DOWN, UDR)) == [(Kind.FIRING, DriftCode.PEER_DOWN)]
    assert kinds(sim.at(600, PEER_DOWN, UDR)) == [(Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN)]


@pytest.mark.parametrize("restart", [False, True])
def test_flapping_is_one_alert_then_quiet_until_stable(restart: bool) -> None:
    rules = AlertRules(flap_transitions=4, flap_window=timedelta(minutes=30),
                       flap_quiet=timedelta(minutes=10), default_hold_down=timedelta(0))
    sim = Sim(rules=rules, restart_between_passes=restart)
    seen: list[tuple[Kind, DriftCode]] = []
    # PEER_FAILED flips every minute: appear, gone, appear, gone (4 changes) → flapping.
    assert kinds(sim.at(0, PEER_FAILED)) == [(Kind.FIRING, DriftCode.PEER_FAILED)]
    assert kinds(sim.at(60)) == [(Kind.RESOLVED, DriftCode.PEER_FAILED)]
    assert kinds(sim.at(120, PEER_FAILED)) == [(Kind.FIRING, DriftCode.PEER_FAILED)]
    assert kinds(sim.at(180)) == [(Kind.FLAPPING, DriftCode.PEER_FAILED)]
    for i in range(4, 20):  # keeps flipping: not one more message
        seen += kinds(sim.at(i * 60, *((PEER_FAILED,) if i % 2 == 0 else ())))
    assert seen == []
    # stable (absent) for flap_quiet → resolved, once, with the flapping episode's duration
    assert sim.at(19 * 60 + 599) == []
    [resolved] = sim.at(19 * 60 + 600)
    assert resolved.kind == Kind.RESOLVED and resolved.duration_s == 19 * 60 + 600
    assert sim.states[PEER_FAILED.identity].status == Status.INACTIVE


def test_flapping_that_settles_present_fires_once_stable() -> None:
    rules = AlertRules(flap_transitions=5, flap_window=timedelta(minutes=30),
                       flap_quiet=timedelta(minutes=10))
    sim = Sim(rules=rules)
    for t, present in [(0, True), (60, False), (120, True), (179, False)]:
        sim.at(t, *((PEER_DOWN,) if present else ()))  # never past the 180 s hold-down: never fired
    assert sim.states[PEER_DOWN.identity].announced == Announced.NONE
    assert kinds(sim.at(240, PEER_DOWN)) == [(Kind.FLAPPING, DriftCode.PEER_DOWN)]  # 5th change
    assert sim.at(240 + 599, PEER_DOWN) == []
    assert kinds(sim.at(240 + 600, PEER_DOWN)) == [(Kind.FIRING, DriftCode.PEER_DOWN)]


def test_flapping_alerts_of_a_muted_identity_stay_muted() -> None:
    rules = AlertRules(flap_transitions=2, default_hold_down=timedelta(0))
    sim = Sim(rules=rules)
    assert kinds(sim.at(0, ARS, UDR)) == [(Kind.FIRING, DriftCode.ROUTE_SERVER_UNHEALTHY)]
    assert sim.at(60, ARS) == []
    assert sim.states[UDR.identity].status == Status.FLAPPING


def test_blind_fires_after_blind_for_and_unblind_says_how_long() -> None:
    sim = Sim()
    assert sim.at(0, blind={HUB: "agent unreachable"}) == []
    [blind] = sim.at(180, blind={HUB: "agent unreachable"})
    assert (blind.kind, blind.code) == (Kind.BLIND, DriftCode.OBSERVATION_FAILED)
    assert blind.identity == blind_identity(HUB)
    assert blind.observed == "agent unreachable"
    [unblind] = sim.at(600)
    assert unblind.kind == Kind.UNBLIND and unblind.duration_s == 600


def test_observation_failed_drift_makes_the_target_blind_without_its_own_alert() -> None:
    sim = Sim(rules=AlertRules(blind_for=timedelta(0)))
    [blind] = sim.at(0, READ_FAILED)
    assert blind.kind == Kind.BLIND and blind.message == "ARM 503"
    assert READ_FAILED.identity not in sim.states


def test_blind_target_neither_resolves_nor_fires_what_it_cannot_see() -> None:
    sim = Sim()
    sim.at(0, PEER_FAILED, PEER_DOWN)  # PEER_FAILED fires, PEER_DOWN pending
    for t in (60, 300, 900):
        notes = sim.at(t, blind={HUB: "storage unreachable"})
        assert all(n.kind in (Kind.BLIND, Kind.REMINDER) for n in notes), notes
    assert sim.states[PEER_FAILED.identity].status == Status.FIRING
    assert sim.states[PEER_DOWN.identity].status == Status.PENDING
    # sight is back and both are gone: resolution for the announced one, silence for the pending one
    assert kinds(sim.at(960)) == [(Kind.UNBLIND, DriftCode.OBSERVATION_FAILED),
                                  (Kind.RESOLVED, DriftCode.PEER_FAILED)]


def test_drift_observed_while_partially_blind_still_fires() -> None:
    sim = Sim()
    notes = sim.at(0, UDR, blind={HUB: "agent unreachable"})
    assert kinds(notes) == [(Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN)]


def test_targets_outside_the_pass_are_left_alone() -> None:
    sim = Sim(targets=("hub-neu",))
    sim.at(0, OTHER_TARGET)
    sim.targets = (HUB,)
    assert sim.at(60) == []  # hub-neu not in this pass: its alert must not resolve
    assert sim.states[OTHER_TARGET.identity].status == Status.FIRING


def test_forgotten_once_quiet_for_the_flap_window() -> None:
    sim = Sim()
    sim.at(0, PEER_FAILED)
    sim.at(60)
    assert PEER_FAILED.identity in sim.states  # its flap history still matters
    sim.at(60 + 3601)
    assert sim.states == {}


def test_restart_in_the_middle_neither_respams_nor_forgets_resolution() -> None:
    sim = Sim()
    sim.at(0, PEER_DOWN)
    assert kinds(sim.at(180, PEER_DOWN)) == [(Kind.FIRING, DriftCode.PEER_DOWN)]
    sim.states = roundtrip(sim.states)
    assert sim.at(240, PEER_DOWN) == []
    sim.states = roundtrip(sim.states)
    assert kinds(sim.at(300)) == [(Kind.RESOLVED, DriftCode.PEER_DOWN)]


def test_state_round_trips_through_json_exactly() -> None:
    sim = Sim(rules=AlertRules(flap_transitions=3))
    sim.at(0, PEER_DOWN, UDR, blind={HUB: "x"})
    sim.at(200, PEER_DOWN)
    sim.at(260, PEER_DOWN, UDR)
    assert sim.states and roundtrip(sim.states) == sim.states


def test_rules_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        AlertRules(flap_transitions=1)
    with pytest.raises(ValueError):
        AlertRules(repeat_interval=timedelta(0))


def test_notifications_are_ordered_by_target_then_kind() -> None:
    sim = Sim(targets=(HUB, "hub-neu"))
    sim.at(0, PEER_FAILED)
    notes = sim.at(60, UDR, OTHER_TARGET, blind={HUB: "agent"})
    assert [(n.target, n.kind) for n in notes] == [
        ("hub-neu", Kind.FIRING), (HUB, Kind.FIRING)]  # PEER_FAILED unknown while blind; blind pending


def test_muted_consequences_are_handed_to_their_causes_card_folded_and_stay_unannounced() -> None:
    sim = Sim()
    down = Drift("hub-weu", DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_0", "down")
    missing = Drift("hub-weu", DriftCode.ROUTE_MISSING, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0", "")
    assert sim.at(0, down, missing) == []  # hold-down
    notes = sim.at(180, down, missing)
    assert [(n.code, n.folded) for n in notes] == [(DriftCode.PEER_DOWN, False), (DriftCode.ROUTE_MISSING, True)]
    assert sim.states[missing.identity].announced == Announced.NONE
    # the session comes back but the route stays missing: now it speaks for itself
    assert sorted(kinds(sim.at(240, missing))) == [(Kind.FIRING, DriftCode.ROUTE_MISSING), (Kind.RESOLVED, DriftCode.PEER_DOWN)]


def test_a_dead_lettered_card_is_not_announced() -> None:
    """Teams refused the card for good: the next pass says it again (firing, and resolved)."""
    sim = Sim()
    udr = Drift("hub-weu", DriftCode.UDR_INVARIANT_BROKEN, "subnet=v:s/prefix=0.0.0.0/0", "lost")
    assert kinds(sim.at(0, udr)) == [(Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN)]
    sim.states = undelivered(sim.states, {udr.identity: Kind.FIRING}, T0)
    assert kinds(sim.at(60, udr)) == [(Kind.FIRING, DriftCode.UDR_INVARIANT_BROKEN)]
    assert kinds(sim.at(120)) == [(Kind.RESOLVED, DriftCode.UDR_INVARIANT_BROKEN)]
    sim.states = undelivered(sim.states, {udr.identity: Kind.RESOLVED}, T0)
    assert kinds(sim.at(180)) == [(Kind.RESOLVED, DriftCode.UDR_INVARIANT_BROKEN)]
    assert kinds(sim.at(240)) == []
