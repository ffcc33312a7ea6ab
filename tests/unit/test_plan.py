"""The planner's interlocks: unknown state, policy opt-ins, suspend, maintenance, budget, firewall policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.diff import diff
from reconciler.drift import Drift
from reconciler.observed import Firewall, Hub, Observation, Unknown
from reconciler.plan import Known, Plan, StepKind, plan
from tests.unit.factories import ARS, FW, default_route, observation, target

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KNOWN = Known(ars_ips=ARS, firewall_ip=FW, firewall_healthy=True)
WRONG_HOP = {
    "nva1": {
        "RouteServiceRole_IN_0": (default_route("10.0.1.6"),),
        "RouteServiceRole_IN_1": (default_route("10.0.1.6"),),
    }
}


def run(obs: Observation, known: Known = KNOWN, **target_overrides: Any) -> Plan:
    t = target(**target_overrides)
    return plan(t, diff(t, obs), known, NOW)


def reasons(p: Plan) -> dict[str, str]:
    return {s.identity.split("|")[1]: s.reason for s in p.skipped}


def test_healthy_world_plans_nothing() -> None:
    p = run(observation())
    assert p.steps == () and p.skipped == ()


def test_nva_drift_becomes_one_intent_per_peer_with_desired_values() -> None:
    p = run(replace(observation(), learned=WRONG_HOP))
    assert [s.kind for s in p.steps] == [StepKind.AGENT_INTENT]
    intent = p.steps[0].intent
    assert intent is not None
    assert intent.neighbors == (("10.0.2.4", 65515), ("10.0.2.5", 65515))
    assert intent.prefixes == ("0.0.0.0/0",)
    assert intent.next_hop == FW
    assert intent.local_asn == 65001
    assert len(p.steps[0].fixes) == 2


@pytest.mark.parametrize(
    "unknown",
    [
        {"hub": Unknown("hub.get", "ars-hub", "500")},
        {"firewall": Unknown("firewall.get", "fw-hub", "timeout"), "firewall_ip": None},
        {"agents": {"nva1": Unknown("agent.state", "nva1", "refused")}},
    ],
    ids=["hub", "firewall", "agent"],
)
def test_no_nva_action_from_unknown_state(unknown: dict[str, Any]) -> None:
    obs = replace(observation(), learned=WRONG_HOP, **unknown)
    t = target()
    known = Known(
        ars_ips=None if "hub" in unknown else ARS,
        firewall_ip=obs.firewall_ip,
        firewall_healthy=None if "firewall" in unknown else True,
    )
    p = plan(t, diff(t, obs), known, NOW)
    assert p.steps == ()
    assert all("unknown" in s.reason for s in p.skipped), p.skipped


def test_learned_routes_unknown_blocks_that_peer() -> None:
    # The agent still shows the wrong hop, but ARM's view is unknown: nothing is pushed.
    obs = replace(observation(), learned={"nva1": Unknown("routes.learned", "nva1", "LRO failed")})
    obs = replace(
        obs,
        agents={
            "nva1": replace(
                obs.agents["nva1"],
                neighbors=tuple(  # type: ignore[arg-type]
                    replace(n, advertised=(default_route("10.0.1.6"),)) for n in obs.agents["nva1"].neighbors
                ),
            )
        },
    )  # type: ignore[union-attr]
    p = run(obs)
    assert p.steps == ()
    assert "learned routes of nva1 could not be read" in reasons(p)["ROUTE_NEXT_HOP_WRONG"]


def test_azure_writes_are_off_by_default() -> None:
    p = run(replace(observation(), hub=Hub("Succeeded", "Provisioned", 65515, ARS, False, None)))
    assert p.steps == ()
    assert "azure_writes" in reasons(p)["BRANCH_TO_BRANCH_DISABLED"]


def test_azure_writes_when_opted_in_come_first() -> None:
    obs = replace(
        observation(), hub=Hub("Succeeded", "Provisioned", 65515, ARS, False, None), connections=(), learned={}
    )
    p = run(obs, policy={"azure_writes": True})
    assert [s.kind for s in p.steps] == [StepKind.ENABLE_BRANCH_TO_BRANCH, StepKind.PUT_CONNECTION]
    assert p.steps[1].connection == ("nva1", "10.0.1.6", 65001)


def test_unexpected_peer_is_never_deleted() -> None:
    from reconciler.observed import Connection

    obs = replace(
        observation(),
        connections=(
            *observation().connections,  # type: ignore[misc]
            Connection("rogue", "10.0.1.9", 65009, "Succeeded", "Connected"),
        ),
    )
    p = run(obs, policy={"azure_writes": True})
    assert p.steps == ()
    assert "human" in reasons(p)["PEER_UNEXPECTED"]


def test_suspend_leaves_everything_alone() -> None:
    p = run(replace(observation(), learned=WRONG_HOP), suspend=True)
    assert p.steps == ()
    assert set(reasons(p).values()) == {"target suspended: observe and record only"}


def test_maintenance_window_leaves_everything_alone_only_inside_it() -> None:
    window = [{"start": "2026-11-25T11:00:00Z", "end": "2026-11-25T13:00:00Z", "reason": "change"}]
    inside = run(replace(observation(), learned=WRONG_HOP), maintenance=window)
    assert inside.steps == () and "maintenance window" in inside.notes[0]
    later = [{"start": "2026-11-25T13:00:00Z", "end": "2026-11-25T14:00:00Z"}]
    assert len(run(replace(observation(), learned=WRONG_HOP), maintenance=later).steps) == 1


def test_action_budget_caps_steps_and_says_so() -> None:
    from reconciler.observed import Connection

    peers = [
        {"name": f"nva{i}", "ip": f"10.0.1.{i}", "asn": 65001, "agent_url": "https://x", "token_setting": "T"}
        for i in range(1, 5)
    ]
    obs = replace(
        observation(),
        agents={},
        connections=tuple(Connection(f"nva{i}", f"10.0.1.{i}", 65001, "Succeeded", "Connected") for i in range(1, 5)),
        learned={f"nva{i}": {"RouteServiceRole_IN_0": (), "RouteServiceRole_IN_1": ()} for i in range(1, 5)},
    )
    p = run(obs, peers=peers, policy={"action_budget": 2})
    assert len(p.steps) == 2
    assert sum("action budget of 2" in s.reason for s in p.skipped) == 4  # 2 peers x 2 instances


def test_observe_only_policy() -> None:
    p = run(replace(observation(), learned=WRONG_HOP), policy={"nva_fixes": False})
    assert p.steps == ()
    assert "nva_fixes" in reasons(p)["ROUTE_NEXT_HOP_WRONG"]


def test_firewall_unhealthy_alert_policy_does_not_point_route_at_it() -> None:
    obs = replace(observation(), firewall=Firewall("fw-hub", "Failed", FW), learned=WRONG_HOP)
    p = run(obs, known=Known(ARS, FW, False))
    assert p.steps == ()
    assert "firewall unhealthy" in reasons(p)["ROUTE_NEXT_HOP_WRONG"]


def test_firewall_unhealthy_withdraw_policy_withdraws_and_restores_later() -> None:
    obs = replace(observation(), firewall=Firewall("fw-hub", "Succeeded", None), firewall_ip=None)
    fw = {"name": "fw-hub", "unhealthy_policy": "withdraw"}
    p = run(obs, known=Known(ARS, None, False), firewall=fw)
    assert [s.kind for s in p.steps] == [StepKind.AGENT_WITHDRAW]
    assert p.steps[0].intent is not None and p.steps[0].intent.prefixes == ()
    # Firewall back, route withdrawn: the normal intent restores it.
    empty = {"nva1": {"RouteServiceRole_IN_0": (), "RouteServiceRole_IN_1": ()}}
    back = run(replace(observation(), learned=empty), firewall=fw)
    assert [s.kind for s in back.steps] == [StepKind.AGENT_INTENT]
    assert back.steps[0].intent is not None and back.steps[0].intent.prefixes == ("0.0.0.0/0",)


def test_peer_without_agent_is_left_alone() -> None:
    peers = [{"name": "nva1", "ip": "10.0.1.6", "asn": 65001}]
    p = run(replace(observation(), learned=WRONG_HOP, agents={}), peers=peers)
    assert p.steps == ()
    assert "no agent_url" in reasons(p)["ROUTE_NEXT_HOP_WRONG"]


def test_every_drift_is_either_planned_or_skipped_with_a_reason() -> None:
    obs = replace(
        observation(),
        learned=WRONG_HOP,
        hub=Hub("Succeeded", "Provisioned", 65515, ARS, False, None),
        firewall=Firewall("fw-hub", "Succeeded", FW),
    )
    t = target()
    drifts: list[Drift] = diff(t, obs)
    p = plan(t, drifts, KNOWN, NOW)
    covered = {i for s in p.steps for i in s.fixes} | {s.identity for s in p.skipped}
    assert {d.identity for d in drifts} <= covered
