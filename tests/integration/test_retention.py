"""Retention on Azurite: expired rows go in paced batches; current state never does (clock injected)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from localenv.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from reconciler.drift import Drift, DriftCode
from reconciler.errors import TransientError
from reconciler.ledger import Ledger, PassRecord
from reconciler.outbox import AlertStore
from reconciler.retention import Retention, RetentionPolicy
from reconciler.trigger import Trigger

pytestmark = pytest.mark.azurite

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
OLD_ROUTE = Drift("hub", DriftCode.ROUTE_MISSING, "peer=nva1/instance=RouteServiceRole_IN_0/prefix=0.0.0.0/0", "gone")
RECENT_PEER = Drift("hub", DriftCode.PEER_DOWN, "peer=nva1/instance=RouteServiceRole_IN_1", "down")
STILL_OPEN = Drift("hub", DriftCode.BRANCH_TO_BRANCH_DISABLED, "route_server=ars", "off")


class Accepting:
    async def send(self, payload: bytes, idempotency_key: str) -> None:
        return None


@pytest.fixture
async def ledger(azurite: Azurite, storage_prefix: str) -> AsyncIterator[Ledger]:
    async with Ledger(azurite.connection_string, table_prefix=storage_prefix) as led:
        await led.ensure_tables()
        yield led


def pass_record(i: int, at: datetime) -> PassRecord:
    return PassRecord(f"p{i:04d}", Trigger.TIMER, at, 1.0, ("hub",), {"drifts": 0})


async def test_expired_rows_are_deleted_in_paced_batches_and_current_state_is_kept(
    azurite: Azurite, storage_prefix: str, ledger: Ledger
) -> None:
    # 250 pass records on one old day (one partition: three batches of at most 100), 3 recent.
    old_day = NOW - 120 * DAY
    for i in range(250):
        await ledger.record_pass(pass_record(i, old_day + i * timedelta(seconds=1)))
    for i in range(3):
        await ledger.record_pass(pass_record(1000 + i, NOW - i * DAY))
    # Drift: one incident resolved long ago, one resolved last week, one open since long ago.
    await ledger.record_target("hub", [OLD_ROUTE, STILL_OPEN], [], NOW - 100 * DAY, blind=False)
    await ledger.record_target("hub", [STILL_OPEN], [], NOW - 95 * DAY, blind=False)
    await ledger.record_target("hub", [STILL_OPEN, RECENT_PEER], [], NOW - 10 * DAY, blind=False)
    await ledger.record_target("hub", [STILL_OPEN], [], NOW - 5 * DAY, blind=False)
    # Teams outbox: one message sent (now), one still queued.
    async with AlertStore(azurite.connection_string, storage_prefix) as store:
        assert await store.enqueue("hub", b"sent", "k1")
        await store.flush(Accepting())
        assert await store.enqueue("hub", b"queued", "k2")

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async with Retention(azurite.connection_string, storage_prefix, RetentionPolicy(days=90), sleep=sleep) as r:
        first = await r.purge(NOW)
    assert first.complete and first.deleted["passes"] == 250, first
    assert first.deleted["drift"] == 1  # OLD_ROUTE, resolved 95 days ago
    assert first.deleted["outbox"] == 0  # sent just now
    assert first.batches >= 3 + 1 + 2 and len(pauses) == first.batches - 1  # a pause between batches
    assert {p.pass_id for p in await ledger.passes(limit=1000)} == {"p1000", "p1001", "p1002"}
    assert {d.identity for d in await ledger.open_drifts()} == {STILL_OPEN.identity}
    history = await ledger.history(target="hub", limit=1000)
    assert history and all(h["at"] >= NOW - 90 * DAY for h in history)  # type: ignore[operator]
    assert any(h["kind"] == "resolved" and h["identity"] == RECENT_PEER.identity for h in history)
    everything = await ledger.history(limit=1000)
    assert all(h["at"] >= NOW - 90 * DAY for h in everything)  # type: ignore[operator]

    # 91 days on: the sent message and its index row are gone; the queued one is not.
    async with Retention(azurite.connection_string, storage_prefix, RetentionPolicy(days=90), sleep=sleep) as r:
        later = await r.purge(NOW + 91 * DAY)
    assert later.deleted["outbox"] == 3, later  # the sent message and both idempotency index rows
    async with AlertStore(azurite.connection_string, storage_prefix) as store:
        assert [e.payload for e in await store.entries("hub")] == [b"queued"]
        assert [e.payload for e in await store.pending()] == [b"queued"]
    assert {d.identity for d in await ledger.open_drifts()} == {STILL_OPEN.identity}


async def test_a_run_stops_at_its_batch_budget_and_the_next_run_finishes(
    azurite: Azurite, storage_prefix: str, ledger: Ledger
) -> None:
    for i in range(150):
        await ledger.record_pass(pass_record(i, NOW - 200 * DAY + i * timedelta(seconds=1)))
    policy = RetentionPolicy(days=90, pause=0, max_batches=1)
    async with Retention(azurite.connection_string, storage_prefix, policy) as r:
        first = await r.purge(NOW)
        assert (first.deleted["passes"], first.complete) == (100, False)
        second = await r.purge(NOW)
        assert (second.deleted["passes"], second.complete) == (50, True)
        assert await ledger.passes(limit=10) == []


async def test_tables_never_created_have_nothing_to_purge(azurite: Azurite, storage_prefix: str) -> None:
    async with Retention(azurite.connection_string, storage_prefix) as r:
        result = await r.purge(NOW)
    assert result.complete and sum(result.deleted.values()) == 0


async def test_a_purge_of_a_stopped_account_is_a_retention_error_not_a_ledger_one(storage_prefix: str) -> None:
    # Its rows span the outbox's tables too: the message must name retention, not the drift ledger.
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stopped = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )
    async with Retention(stopped, storage_prefix) as purge:
        with pytest.raises(TransientError, match=r"^retention: read \w*alertoutbox: storage unreachable"):
            await purge.purge(NOW)
