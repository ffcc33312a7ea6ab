"""The drift ledger against Azurite: keys, newest-first reads, ETags, batching, outages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.data.tables.aio import TableClient as AsyncTableClient
from hypothesis import given, settings
from hypothesis import strategies as st

from localenv.azurite import Azurite
from reconciler.drift import Drift, DriftCode
from reconciler.errors import ConfigurationError, PermanentError, TransientError
from reconciler.ledger import (
    ActionRecord,
    Ledger,
    PassRecord,
    _Stored,
)
from reconciler.storage_rules import decode_key, encode_key
from reconciler.trigger import Trigger

pytestmark = pytest.mark.azurite

T = "/subscriptions/s1/resourceGroups/rg-hub/providers/Microsoft.Network/virtualHubs/ars#1?x\\y"
T0 = datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)
STEP = timedelta(minutes=5)

ROUTE = Drift(T, DriftCode.ROUTE_MISSING, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0",
              "default route not learned", expected="0.0.0.0/0 via 10.0.1.4", observed="absent")
PEER = Drift(T, DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_1", "BGP session down")
FIREWALL = Drift(T, DriftCode.ROUTE_UNEXPECTED, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=10.9.0.0/16",
                 "unexpected route")


@pytest.fixture
async def ledger(azurite: Azurite, storage_prefix: str) -> AsyncIterator[Ledger]:
    async with Ledger(azurite.connection_string, table_prefix=storage_prefix) as led:
        await led.ensure_tables()
        yield led


# ---- keys ----------------------------------------------------------------------------------

FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}


@given(st.text(max_size=200))
def test_key_encoding_round_trips_and_avoids_forbidden_characters(value: str) -> None:
    key = encode_key(value)
    assert decode_key(key) == value
    assert not FORBIDDEN & set(key)
    assert not key.startswith("~")  # reserved for the all-targets history partitions


def test_prefix_key_is_readable() -> None:
    assert encode_key("t1|ROUTE_MISSING|prefix=0.0.0.0/0") == "t1|ROUTE_MISSING|prefix=0.0.0.0!2F0"


def test_oversized_key_is_hashed_within_the_limit() -> None:
    key = encode_key("/" * 2000)
    assert len(key) <= 1024 and key != encode_key("/" * 2001)
    with pytest.raises(ValueError, match="hashed"):
        decode_key(key)


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_azurite_accepts_every_encoded_key(azurite: Azurite, value: str) -> None:
    # Sync client: hypothesis drives many examples and cannot run an async test itself.
    with TableServiceClient.from_connection_string(azurite.connection_string) as svc:
        tc = svc.create_table_if_not_exists("keyprobe")
        entity = {"PartitionKey": encode_key(value), "RowKey": encode_key(value[::-1]), "plain": value}
        tc.upsert_entity(entity)
        got = tc.get_entity(encode_key(value), encode_key(value[::-1]))
        assert (decode_key(got["PartitionKey"]), got["plain"]) == (value, value)


async def test_target_and_prefix_with_slashes_round_trip_through_the_ledger(ledger: Ledger) -> None:
    change = await ledger.record_target(T, [ROUTE], [], T0, blind=False)
    [stored] = await ledger.open_drifts(T)
    assert stored == change.opened[0]
    assert (stored.target, stored.subject, stored.identity) == (T, ROUTE.subject, ROUTE.identity)
    assert stored.first_seen == T0  # microseconds survive


# ---- transitions on storage --------------------------------------------------------------------


async def test_passes_open_persist_and_resolve_in_one_row_per_identity(ledger: Ledger) -> None:
    await ledger.record_target(T, [ROUTE, PEER], [], T0, blind=False)
    await ledger.record_target(T, [ROUTE, PEER], [], T0 + STEP, blind=False)
    change = await ledger.record_target(T, [ROUTE], [], T0 + 2 * STEP, blind=False)
    assert [r.identity for r in change.resolved] == [PEER.identity]
    assert change.resolved[0].duration == 2 * STEP
    [open_route] = await ledger.open_drifts(T)
    assert (open_route.identity, open_route.occurrences, open_route.last_seen) == (
        ROUTE.identity, 3, T0 + 2 * STEP)


async def test_blind_pass_leaves_unseen_drift_open(ledger: Ledger) -> None:
    await ledger.record_target(T, [ROUTE, PEER], [], T0, blind=False)
    change = await ledger.record_target(T, [PEER], [], T0 + STEP, blind=True)
    assert change.resolved == () and [r.identity for r in change.kept] == [ROUTE.identity]
    assert {r.identity for r in await ledger.open_drifts(T)} == {ROUTE.identity, PEER.identity}


async def test_open_drifts_filters_by_target_and_severity(ledger: Ledger) -> None:
    other = "t-other"
    await ledger.record_target(T, [ROUTE, FIREWALL], [], T0, blind=False)
    await ledger.record_target(other, [replace(ROUTE, target=other)], [], T0, blind=False)
    assert len(await ledger.open_drifts()) == 3
    assert {r.target for r in await ledger.open_drifts(severity="critical")} == {T, other}
    assert [r.identity for r in await ledger.open_drifts(T, severity="warning")] == [FIREWALL.identity]


async def test_history_is_newest_first_per_target_and_overall(ledger: Ledger) -> None:
    act = ActionRecord(ROUTE.identity, "agent.apply", "fixed", "advertised 0.0.0.0/0")
    await ledger.record_target(T, [ROUTE], [], T0, blind=False)
    await ledger.record_target(T, [], [act], T0 + STEP, blind=False)
    await ledger.record_target("t2", [replace(PEER, target="t2")], [], T0 + 2 * STEP, blind=False)
    await ledger.record_poison('{"target": "t3"}', "dequeued 5 times", T0 + 3 * STEP)

    mine = await ledger.history(T)
    assert [(e["kind"], e["at"]) for e in mine] == [
        ("action", T0 + STEP), ("resolved", T0 + STEP), ("opened", T0)]
    assert mine[1]["duration_s"] == STEP.total_seconds()
    assert mine[0]["outcome"] == "fixed"

    everything = await ledger.history(limit=3)
    assert [e["kind"] for e in everything] == ["poison", "opened", "action"]
    assert everything[0]["detail"] == "dequeued 5 times"


async def test_repeated_planned_action_is_not_written_again(ledger: Ledger) -> None:
    plan = ActionRecord(ROUTE.identity, "agent.apply", "planned", "dry run")
    for i in range(3):
        await ledger.record_target(T, [ROUTE], [plan], T0 + i * STEP, blind=False)
    kinds = [e["kind"] for e in await ledger.history(T)]
    assert kinds == ["action", "opened"]


# ---- passes ---------------------------------------------------------------------------------


def _pass(i: int, minutes: int, targets: tuple[str, ...] = ("t1",)) -> PassRecord:
    return PassRecord(
        pass_id=f"p{i}", trigger=Trigger.TIMER, started_at=T0 + timedelta(minutes=minutes), duration_s=1.5 + i,
        targets=targets, counts={"opened": i, "resolved": 0}, errors=(f"e{i}",) if i % 2 else (),
        dry_run=i == 3,
    )


async def test_passes_read_newest_first_across_days(ledger: Ledger) -> None:
    # Written out of order, spanning midnight (so spanning partitions).
    minutes = [0, 24 * 60 + 5, 10, 24 * 60, 3 * 24 * 60]
    for i, m in enumerate(minutes):
        await ledger.record_pass(_pass(i, m, ("t1",) if i != 2 else ("t2", T)))
    got = await ledger.passes()
    assert [p.pass_id for p in got] == ["p4", "p1", "p3", "p2", "p0"]
    assert got[2] == _pass(3, minutes[3])
    assert [p.pass_id for p in await ledger.passes(limit=2)] == ["p4", "p1"]
    assert [p.pass_id for p in await ledger.passes(target=T)] == ["p2"]


# ---- ETags and batching ----------------------------------------------------------------------


class InterferedLedger(Ledger):
    """A ledger whose reads are followed by another writer touching the first row (a real 412)."""

    def __init__(self, connection_string: str, table_prefix: str) -> None:
        super().__init__(connection_string, table_prefix)
        self._conn = connection_string
        self.interfere = 0
        self.reads = 0

    async def _read_target(self, target: str) -> dict[str, _Stored]:
        stored = await super()._read_target(target)
        self.reads += 1
        if self.interfere > 0 and stored:
            self.interfere -= 1
            first = next(iter(stored.values())).record
            async with AsyncTableClient.from_connection_string(self._conn, table_name=self.drift_table) as tc:
                await tc.update_entity(
                    {"PartitionKey": encode_key(first.target), "RowKey": encode_key(first.identity),
                     "last_action": "human.note", "last_outcome": "skipped"},
                    mode=UpdateMode.MERGE,
                )
        return stored


@pytest.fixture
async def interfered(azurite: Azurite, storage_prefix: str) -> AsyncIterator[InterferedLedger]:
    async with InterferedLedger(azurite.connection_string, storage_prefix) as led:
        await led.ensure_tables()
        yield led


async def test_etag_conflict_is_reread_and_reapplied_once(interfered: InterferedLedger) -> None:
    await interfered.record_target(T, [ROUTE], [], T0, blind=False)
    interfered.interfere, interfered.reads = 1, 0
    change = await interfered.record_target(T, [ROUTE], [], T0 + STEP, blind=False)
    assert interfered.reads == 2
    [rec] = await interfered.open_drifts(T)
    assert rec == change.persisting[0]
    assert rec.occurrences == 2  # counted once, not once per attempt
    assert rec.last_action == "human.note"  # the other writer's change survived the re-apply


async def test_second_etag_conflict_is_transient(interfered: InterferedLedger) -> None:
    await interfered.record_target(T, [ROUTE], [], T0, blind=False)
    interfered.interfere = 2
    with pytest.raises(TransientError, match="changed by another writer"):
        await interfered.record_target(T, [ROUTE], [], T0 + STEP, blind=False)


async def test_stale_etag_on_a_direct_write_is_refused_by_storage(ledger: Ledger, azurite: Azurite) -> None:
    """The guard the ledger relies on: a write with an old ETag gets 412 (not a silent overwrite)."""
    await ledger.record_target(T, [ROUTE], [], T0, blind=False)
    async with AsyncTableClient.from_connection_string(azurite.connection_string, ledger.drift_table) as tc:
        row = await tc.get_entity(encode_key(T), encode_key(ROUTE.identity))
        await tc.update_entity(row, mode=UpdateMode.MERGE)
        with pytest.raises(ResourceModifiedError):
            await tc.update_entity(row, mode=UpdateMode.MERGE, etag=row.metadata["etag"],
                                   match_condition=MatchConditions.IfNotModified)


def _many(n: int, target: str = T) -> list[Drift]:
    prefixes = [f"10.{i // 256}.{i % 256}.0/24" for i in range(n)]
    return [Drift(target, DriftCode.ROUTE_UNEXPECTED, f"peer=nva1/prefix={p}", "x") for p in prefixes]


async def test_more_than_100_rows_in_one_partition_are_chunked(ledger: Ledger) -> None:
    drifts = _many(250)
    before = ledger.requests
    change = await ledger.record_target(T, drifts, [], T0, blind=False)
    opened_requests = ledger.requests - before
    assert len(change.opened) == 250 and len(await ledger.open_drifts(T)) == 250
    # 1 read + 3 state batches + 3 history batches per target + 3 in the all-targets feed.
    assert opened_requests == 10

    before = ledger.requests
    await ledger.record_target(T, drifts, [], T0 + STEP, blind=False)
    assert ledger.requests - before == 4  # 1 read + 3 state batches; persisting is not history

    before = ledger.requests
    change = await ledger.record_target(T, [], [], T0 + 2 * STEP, blind=False)
    assert len(change.resolved) == 250 and ledger.requests - before == 10
    assert await ledger.open_drifts(T) == []


async def test_quiet_target_costs_one_request(ledger: Ledger) -> None:
    before = ledger.requests
    await ledger.record_target("quiet", [], [], T0, blind=False)
    await ledger.record_target("quiet", [], [], T0 + STEP, blind=False)
    assert ledger.requests - before == 2


# ---- failures ---------------------------------------------------------------------------------


async def test_missing_tables_are_a_permanent_error(azurite: Azurite) -> None:
    async with Ledger(azurite.connection_string, table_prefix="t" + uuid.uuid4().hex[:10]) as led:
        with pytest.raises(PermanentError, match="ensure_tables"):
            await led.record_target(T, [ROUTE], [], T0, blind=False)


@pytest.mark.parametrize("prefix", ["", "ars-prod", "1ars", "a" * 52])
def test_table_prefix_that_cannot_name_a_table_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="table prefix"):
        Ledger("UseDevelopmentStorage=true", table_prefix=prefix)


async def test_development_storage_shortcut_points_at_local_emulator() -> None:
    async with Ledger("UseDevelopmentStorage=true") as led:
        assert led.url.startswith("http://127.0.0.1:10002/devstoreaccount1")


async def test_storage_outage_is_transient_and_next_pass_restores_the_truth(private_azurite: Azurite) -> None:
    async with Ledger(private_azurite.connection_string, table_prefix="outage", retries=1) as led:
        await led.ensure_tables()
        await led.record_target(T, [ROUTE, PEER], [], T0, blind=False)

        private_azurite.stop()
        with pytest.raises(TransientError, match=r"storage unreachable.*ServiceRequestError") as err:
            await led.record_target(T, [PEER], [], T0 + STEP, blind=False)
        assert repr(T) in str(err.value)
        with pytest.raises(TransientError):
            await led.record_pass(_pass(1, 5))

        private_azurite.start()
        change = await led.record_target(T, [PEER], [], T0 + 2 * STEP, blind=False)
        assert [r.identity for r in change.resolved] == [ROUTE.identity]
        [peer] = await led.open_drifts(T)
        assert (peer.identity, peer.occurrences, peer.last_seen) == (PEER.identity, 2, T0 + 2 * STEP)
