"""The ledger's pure transitions: opened, persisting, resolved, blind, re-open, idempotence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.drift import Drift, DriftCode
from reconciler.ledger_state import (
    ActionRecord,
    DriftRecord,
    DriftStatus,
    LedgerChange,
    apply,
    transition,
)

T = "lab-weu"
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)

ROUTE = Drift(T, DriftCode.ROUTE_MISSING, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0",
              "default route not learned", expected="0.0.0.0/0 via 10.0.1.4", observed="absent")
PEER = Drift(T, DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_1", "BGP session down",
             expected="Connected", observed="Connecting")
BLINDING = Drift(T, DriftCode.OBSERVATION_FAILED, "read=learned_routes/resource=ars-weu", "timeout")


def run(
    passes: list[list[Drift]], *, blind_at: frozenset[int] = frozenset()
) -> tuple[list[DriftRecord], LedgerChange]:
    """Feed passes one STEP apart through transition; return the final records and the last change."""
    records: list[DriftRecord] = []
    change = LedgerChange()
    for i, drifts in enumerate(passes):
        change = transition(T, records, drifts, [], T0 + i * STEP, blind=i in blind_at)
        records = apply(records, change)
    return records, change


def by_id(records: list[DriftRecord]) -> dict[str, DriftRecord]:
    return {r.identity: r for r in records}


@pytest.mark.parametrize(
    ("name", "passes", "blind_at", "want_opened", "want_persisting", "want_resolved", "want_kept"),
    [
        ("new drift is opened", [[ROUTE]], frozenset(), [ROUTE], [], [], []),
        ("drift seen again persists", [[ROUTE], [ROUTE]], frozenset(), [], [ROUTE], [], []),
        ("drift gone is resolved", [[ROUTE], []], frozenset(), [], [], [ROUTE], []),
        ("blind pass keeps unseen drift open", [[ROUTE, PEER], [PEER, BLINDING]], frozenset(),
         [BLINDING], [PEER], [], [ROUTE]),
        ("blind flag alone keeps drift open", [[ROUTE], []], frozenset({1}), [], [], [], [ROUTE]),
        ("observation failure itself resolves when reads work again", [[BLINDING], []], frozenset(),
         [], [], [BLINDING], []),
        ("resolved drift back again is re-opened", [[ROUTE], [], [ROUTE]], frozenset(), [ROUTE], [], [], []),
        ("resolved drift still gone is no change", [[ROUTE], [], []], frozenset(), [], [], [], []),
    ],
)
def test_transition_table(
    name: str,
    passes: list[list[Drift]],
    blind_at: frozenset[int],
    want_opened: list[Drift],
    want_persisting: list[Drift],
    want_resolved: list[Drift],
    want_kept: list[Drift],
) -> None:
    _, change = run(passes, blind_at=blind_at)
    got = (
        sorted(r.identity for r in change.opened),
        sorted(r.identity for r in change.persisting),
        sorted(r.identity for r in change.resolved),
        sorted(r.identity for r in change.kept),
    )
    wanted = (want_opened, want_persisting, want_resolved, want_kept)
    want = tuple(sorted(d.identity for d in ds) for ds in wanted)
    assert got == want, name


def test_persisting_drift_increments_occurrences_not_rows() -> None:
    changed = replace(ROUTE, observed="0.0.0.0/0 via 10.0.9.9", message="next hop moved")
    records, change = run([[ROUTE], [ROUTE], [changed]])
    assert len(records) == 1
    rec = change.persisting[0]
    assert (rec.occurrences, rec.first_seen, rec.last_seen) == (3, T0, T0 + 2 * STEP)
    assert (rec.observed, rec.message, rec.status) == ("0.0.0.0/0 via 10.0.9.9", "next hop moved", "open")


def test_resolved_drift_has_resolved_at_and_duration() -> None:
    _, change = run([[ROUTE], [ROUTE], []])
    rec = change.resolved[0]
    assert rec.status is DriftStatus.RESOLVED
    assert rec.resolved_at == T0 + 2 * STEP
    assert rec.duration == 2 * STEP
    assert rec.last_seen == T0 + STEP


def test_blind_pass_does_not_touch_unseen_open_drift() -> None:
    records_before, _ = run([[ROUTE, PEER]])
    records, change = run([[ROUTE, PEER], [BLINDING]])
    assert by_id(records)[ROUTE.identity] == by_id(records_before)[ROUTE.identity]
    assert all(r.status is DriftStatus.OPEN for r in records)
    assert change.resolved == ()


def test_reopen_starts_a_new_incident_and_keeps_counting_occurrences() -> None:
    records, change = run([[ROUTE], [ROUTE], [], [ROUTE]])
    assert len(records) == 1
    rec = change.opened[0]
    assert (rec.status, rec.first_seen, rec.resolved_at) == ("open", T0 + 3 * STEP, None)
    assert rec.occurrences == 3  # 2 passes in the first incident + 1 now
    assert rec.duration is None


def test_action_annotates_its_record_and_reopen_forgets_old_action() -> None:
    fixed = ActionRecord(ROUTE.identity, "agent.apply", "not_confirmed", "route not on IN_1")
    change = transition(T, [], [ROUTE], [fixed], T0, blind=False)
    assert (change.opened[0].last_action, change.opened[0].last_outcome) == ("agent.apply", "not_confirmed")
    records = apply(apply([], change), transition(T, apply([], change), [], [], T0 + STEP, blind=False))
    reopened = transition(T, records, [ROUTE], [], T0 + 2 * STEP, blind=False).opened[0]
    assert (reopened.last_action, reopened.last_outcome) == ("", "")


def test_fixed_drift_absent_after_fix_resolves_with_its_outcome() -> None:
    records = apply([], transition(T, [], [ROUTE], [], T0, blind=False))
    fixed = ActionRecord(ROUTE.identity, "agent.apply", "fixed", "")
    rec = transition(T, records, [], [fixed], T0 + STEP, blind=False).resolved[0]
    assert (rec.status, rec.last_outcome) == ("resolved", "fixed")


def test_unknown_action_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action outcome"):
        ActionRecord("x", "y", "done", "")


def test_every_final_step_outcome_is_recordable_and_an_unverified_one_is_not() -> None:
    from reconciler.outcome import ActionOutcome

    for outcome in ActionOutcome:
        if outcome.final:
            rec = ActionRecord("x", "y", outcome, "")
            assert rec.outcome is outcome
    deferred = transition(T, [], [ROUTE], [ActionRecord(ROUTE.identity, "agent.apply", ActionOutcome.DEFERRED)], T0,
                          blind=False).opened[0]
    assert deferred.last_outcome == "deferred"
    with pytest.raises(ValueError, match="unknown action outcome"):
        ActionRecord("x", "y", ActionOutcome.APPLIED, "")  # verify turns it into fixed / not_confirmed first


def test_drift_of_another_target_is_refused() -> None:
    with pytest.raises(ValueError, match="other"):
        transition(T, [], [replace(ROUTE, target="other")], [], T0, blind=False)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        transition(T, [], [ROUTE], [], T0.replace(tzinfo=None), blind=False)


def test_duplicate_identity_in_one_pass_counts_once() -> None:
    change = transition(T, [], [ROUTE, replace(ROUTE, message="again")], [], T0, blind=False)
    assert len(change.opened) == 1 and change.opened[0].occurrences == 1


DRIFTS = [
    Drift(T, code, f"peer=nva{i}/prefix=10.{i}.0.0/16", "m")
    for i, code in enumerate([DriftCode.ROUTE_MISSING, DriftCode.PEER_DOWN, DriftCode.FIREWALL_UNHEALTHY,
                              DriftCode.OBSERVATION_FAILED, DriftCode.ROUTE_UNEXPECTED])
]


@given(
    history=st.lists(st.tuples(st.sets(st.sampled_from(range(len(DRIFTS)))), st.booleans()), max_size=6),
    final=st.sets(st.sampled_from(range(len(DRIFTS)))),
    blind=st.booleans(),
)
def test_transition_is_idempotent_for_one_now(
    history: list[tuple[set[int], bool]], final: set[int], blind: bool
) -> None:
    """Re-applying a pass (after an ETag conflict or a half-written batch set) changes nothing."""
    records: list[DriftRecord] = []
    for i, (seen, was_blind) in enumerate(history):
        records = apply(records, transition(T, records, [DRIFTS[j] for j in seen], [], T0 + i * STEP,
                                            blind=was_blind))
    now = T0 + len(history) * STEP
    drifts = [DRIFTS[j] for j in final]
    first = transition(T, records, drifts, [], now, blind=blind)
    after = apply(records, first)
    again = transition(T, after, drifts, [], now, blind=blind)
    assert again == first
    assert apply(after, again) == after
    # Every identity seen now is open; nothing is ever resolved while the pass is blind.
    assert all(by_id(after)[d.identity].status is DriftStatus.OPEN for d in drifts)
    if blind or DriftCode.OBSERVATION_FAILED in {d.code for d in drifts}:
        assert first.resolved == ()
