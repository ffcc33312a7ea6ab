"""The planner's interlocks: unknown state, policy opt-ins, suspend, maintenance, budget, firewall policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.diff import diff
from reconciler.drift import Drift, DriftCode
from reconciler.observed import Firewall, Hub, Observation, Unknown
from reconciler.plan import Known, Plan, StepKind, plan
from reconciler.service import known_from
from tests.unit.factories import ARS, FW, INST, default_route, observation, target

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KNOWN = Known(ars_ips=ARS, firewall_ip=FW, firewall_healthy=True, hub_ready=True)
WRONG_HOP = {
    "nva1": {
        "RouteServiceRole_IN_0": (default_route("10.0.1.6"),),
        "RouteServiceRole_IN_1": (default_route("10.0.1.6"),),
    }
}


def run(obs: Observation, known: Known | None = None, **target_overrides: Any) -> Plan:
    """Plan from the observation, with what is known taken from it as the service does."""
    t = target(**target_overrides)
    return plan(t, diff(t, obs), known or known_from(t, obs), NOW)


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
        hub_ready=None if "hub" in unknown else True,
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


def _connection_gone() -> Observation:
    """The bgpConnection of nva1 deleted: its sessions fall, Route Server learns nothing from it."""
    obs = observation()
    agent = obs.agents["nva1"]
    assert not isinstance(agent, Unknown)
    down = replace(agent, neighbors=tuple(replace(n, state="Active", advertised=()) for n in agent.neighbors))
    return replace(obs, connections=(), learned={}, agents={"nva1": down})


def test_no_agent_fix_for_sessions_a_missing_connection_explains() -> None:
    # The agent's config is not what is wrong: an intent would be a no-op that waits out the
    # verification (15 s in the bench) before the human hears about the connection.
    p = run(_connection_gone())
    assert p.steps == ()
    why = reasons(p)
    assert "azure_writes" in why["PEER_MISSING"]
    assert why["PEER_DOWN"].startswith("waits for PEER_MISSING of nva1: no usable bgpConnection")
    assert len(p.skipped) == 3  # PEER_MISSING and PEER_DOWN on both instances, each once


def test_a_connection_the_plan_writes_is_followed_by_the_agent_intent() -> None:
    p = run(_connection_gone(), policy={"azure_writes": True})
    assert [s.kind for s in p.steps] == [StepKind.PUT_CONNECTION, StepKind.AGENT_INTENT]
    assert p.skipped == ()


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
    p = run(obs, known=Known(ARS, FW, False, True))
    assert p.steps == ()
    assert "firewall unhealthy" in reasons(p)["ROUTE_NEXT_HOP_WRONG"]


def test_firewall_unhealthy_withdraw_policy_withdraws_and_restores_later() -> None:
    obs = replace(observation(), firewall=Firewall("fw-hub", "Succeeded", None), firewall_ip=None)
    fw = {"name": "fw-hub", "unhealthy_policy": "withdraw"}
    p = run(obs, known=Known(ARS, None, False, True), firewall=fw)
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


# ---- Azure writes wait for a ready hub (issue #11 item 4) -------------------------------------


@pytest.mark.parametrize(
    "hub",
    [
        Hub("Updating", "Provisioned", 65515, ARS, False, None),
        Hub("Succeeded", "Provisioning", 65515, ARS, False, None),
        None,  # the hub is gone (404)
    ],
    ids=["updating", "routing-provisioning", "absent"],
)
def test_no_azure_write_into_an_unhealthy_or_absent_hub(hub: Hub | None) -> None:
    obs = replace(observation(), hub=hub, connections=(), learned={})
    p = run(obs, policy={"azure_writes": True})
    assert not [s for s in p.steps if s.kind in (StepKind.ENABLE_BRANCH_TO_BRANCH, StepKind.PUT_CONNECTION)], p
    assert "Route Server not ready" in reasons(p)["PEER_MISSING"]


def test_failed_learned_routes_of_a_connection_named_otherwise_block_its_peer() -> None:
    from reconciler.observed import Connection

    obs = replace(
        observation(),
        connections=(Connection("nva1-conn", "10.0.1.6", 65001, "Succeeded", "Connected"),),
        learned={"nva1-conn": Unknown("routes.learned", "nva1-conn", "LRO failed")},
    )
    agent = obs.agents["nva1"]
    assert not isinstance(agent, Unknown)
    wrong = tuple(replace(n, advertised=(default_route("10.0.1.6"),)) for n in agent.neighbors)
    obs = replace(obs, agents={"nva1": replace(agent, neighbors=wrong)})
    p = run(obs)
    assert p.steps == (), p
    assert "learned routes of nva1 could not be read" in reasons(p)["ROUTE_NEXT_HOP_WRONG"]


def test_withdraw_fixes_the_unhealthy_firewall_and_does_not_also_skip_it() -> None:
    obs = replace(observation(), firewall=Firewall("fw-hub", "Succeeded", None), firewall_ip=None)
    p = run(obs, firewall={"name": "fw-hub", "unhealthy_policy": "withdraw"})
    fw = [d for d in p.fixed if "|FIREWALL_UNHEALTHY|" in d]
    assert fw and not {s.identity for s in p.skipped} & set(fw), p


# ---- property: every drift is fixed by a step or skipped with one reason, never both ----------

PEER_NAMES = ("nva1", "nva2", "ghost")  # ghost: in a drift, not declared
CODES_WITH_PEER = {
    DriftCode.PEER_MISSING, DriftCode.PEER_MISMATCH, DriftCode.PEER_FAILED, DriftCode.PEER_UNEXPECTED,
    DriftCode.ROUTE_LIMIT_RISK,
}
PER_INSTANCE = {DriftCode.ROUTE_MISSING, DriftCode.ROUTE_NEXT_HOP_WRONG, DriftCode.ROUTE_REJECTED_LOOP,
                DriftCode.ROUTE_UNEXPECTED}
READS = ("hub.get", "bgp.list", "routes.learned", "firewall.get", "agent.state", "gateway.learned", "vnet.get")


@st.composite
def drifts(draw: st.DrawFn) -> Drift:
    code = draw(st.sampled_from(list(DriftCode)))
    peer = draw(st.sampled_from(PEER_NAMES))
    if code in CODES_WITH_PEER:
        subject = f"peer={peer}"
    elif code == DriftCode.PEER_DOWN:
        subject = f"peer={peer}/instance={draw(st.sampled_from(INST))}"
    elif code in PER_INSTANCE:
        subject = f"peer={peer}/instance={draw(st.sampled_from(INST))}/prefix=0.0.0.0/0"
    elif code == DriftCode.OBSERVATION_FAILED:
        subject = f"read={draw(st.sampled_from(READS))}/resource={draw(st.sampled_from((*PEER_NAMES, 'ars-hub')))}"
    else:
        subject = f"thing={draw(st.integers(0, 3))}"
    return Drift("hub", code, subject, "m")


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    found=st.lists(drifts(), max_size=25),
    azure_writes=st.booleans(),
    nva_fixes=st.booleans(),
    withdraw=st.booleans(),
    budget=st.integers(0, 4),
    agents=st.booleans(),
    known=st.builds(
        Known,
        ars_ips=st.sampled_from([None, (), ARS]),
        firewall_ip=st.sampled_from([None, FW]),
        firewall_healthy=st.sampled_from([None, True, False]),
        hub_ready=st.sampled_from([None, True, False]),
        routes_unknown=st.frozensets(st.sampled_from(PEER_NAMES)),
    ),
)
def test_every_drift_is_fixed_by_a_step_or_skipped_with_one_reason_never_both(
    found: list[Drift], azure_writes: bool, nva_fixes: bool, withdraw: bool, budget: int, agents: bool, known: Known
) -> None:
    peers = [
        {"name": n, "ip": f"10.0.1.{i + 6}", "asn": 65001 + i, "token_setting": "T",
         **({"agent_url": f"https://10.0.1.{i + 6}:8443"} if agents else {})}
        for i, n in enumerate(("nva1", "nva2"))
    ]
    t = target(
        peers=peers,
        policy={"azure_writes": azure_writes, "nva_fixes": nva_fixes, "action_budget": max(budget, 1)},
        firewall={"name": "fw-hub", "unhealthy_policy": "withdraw" if withdraw else "alert"},
    )
    p = plan(t, found, known, NOW)
    identities = {d.identity for d in found}
    fixed, skipped = p.fixed, [s.identity for s in p.skipped]
    assert len(skipped) == len(set(skipped)), "a drift skipped with two reasons"
    assert not fixed & set(skipped), f"fixed and skipped at once: {sorted(fixed & set(skipped))}"
    assert fixed | set(skipped) == identities  # leftovers: drifts - fixed - skipped is empty
    assert len(p.steps) <= t.policy.action_budget
    failed = {d.part("read") for d in found if d.code == DriftCode.OBSERVATION_FAILED}
    for s in p.steps:
        if s.kind in (StepKind.ENABLE_BRANCH_TO_BRANCH, StepKind.PUT_CONNECTION):
            assert azure_writes and known.hub_ready is True and not failed & {"hub.get", "bgp.list"}
        else:
            assert nva_fixes and agents and known.ars_ips and s.subject not in known.routes_unknown
            assert not failed & {"hub.get", "bgp.list", "firewall.get"}
            assert (s.kind == StepKind.AGENT_WITHDRAW) == (withdraw and known.firewall_healthy is False)
