"""The Event Grid intake: screened ARM events become targeted passes on the fan-out queue.

Owns the storage the event path needs — seen event IDs (replay protection) and one pending
marker per target (coalescing), in the `{prefix}events` table — and the verdict counters. The
rules are `reconciler.events` (pure); the pass itself is the queue worker's, with the same lease,
plan, action budget and verification as the timer: an event only asks for a pass sooner.

    {prefix}events   PK "seen"      RK event id     an event already handled (replays are dropped)
                     PK "pending"   RK target       pending (bool), enqueued_at, last_run_at,
                                                    changes (JSON list of attributions, newest last)

Must not know the Functions SDK (function_app hands it plain dicts) or how a pass runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from reconciler import change_report, storage
from reconciler.attribution import Attribution
from reconciler.desired import DesiredState
from reconciler.errors import TransientError
from reconciler.events import (
    Coalesce,
    Enqueue,
    Marker,
    Pacing,
    Rejected,
    ResourceIndex,
    Screen,
    Verdict,
    decide,
    is_validation,
    parse,
    screen,
)
from reconciler.fanout import FanoutMessage, FanoutQueue
from reconciler.settings import Settings
from reconciler.storage import StorageAccess
from reconciler.storage_rules import Table, encode_key
from reconciler.trigger import Trigger

log = logging.getLogger(__name__)
_CHANGES_KEPT = 10  # attributions kept per pending pass (a storm keeps the newest)
_CONFLICT_TRIES = 8


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    targets: tuple[str, ...] = ()  # affected targets (accepted events)
    enqueued: tuple[str, ...] = ()  # targets a new pass was queued for (the rest joined one pending)
    reason: str = ""


class EventIntake:
    """One per worker. Clients are built on first use, on the worker's event loop."""

    def __init__(self, settings: Settings, *, message_ttl_s: int = 3600) -> None:
        self.settings = settings
        self.message_ttl_s = message_ttl_s  # fanout.HostQueueRules.message_ttl: outlive the host's retries
        self.counts: Counter[Verdict] = Counter()
        self.pacing = Pacing(settings.event_settle, settings.event_min_interval, max(60.0, settings.event_max_age))
        # An ARM write is often one of a burst (a deployment, a portal blade saving several
        # resources), so its pass waits for the rest. An agent's report is different: the agent
        # read FRR after the change, on its 1-second watch, so there is no burst to wait for. A
        # second edit reported later joins the pending pass, or queues the next one no sooner than
        # the minimum interval: the rate bound is the same for both.
        self.report_pacing = replace(self.pacing, settle_s=settings.report_settle)
        own = [i for i in settings.event_own_ids.split(",") if i.strip()]
        if settings.managed_identity_client_id:
            own.append(settings.managed_identity_client_id)
        self._own = own
        self._rules: tuple[int, Screen, ResourceIndex] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._table: TableClient | None = None
        self._queue: FanoutQueue | None = None
        self._service: TableServiceClient | None = None
        self._access: StorageAccess | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # ---- clients --------------------------------------------------------------------------------

    async def _clients(self) -> tuple[TableClient, FanoutQueue]:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # concurrent first events must build one set of clients, not many
            return await self._build(loop)

    def storage_clients(self) -> tuple[StorageAccess, TableServiceClient, TableClient]:
        """The storage access, the table service and the events table's client; no I/O yet.

        The same access as every other adapter (storage.from_settings): a connection string, or the
        managed identity with the service URIs (main.bicep turns shared-key access off), and the
        transport that never reads the environment per request (ARS_HTTPS_PROXY, issue #18)."""
        access = storage.from_settings(self.settings)
        service = storage.table_service(access, retry_total=3, connection_timeout=10, read_timeout=30)
        return access, service, service.get_table_client(Table.EVENTS.of(self.settings.table_prefix))

    async def _build(self, loop: asyncio.AbstractEventLoop) -> tuple[TableClient, FanoutQueue]:
        if self._loop is not loop or self._table is None or self._queue is None:
            access, service, table = self.storage_clients()
            try:
                await table.create_table()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                await service.close()
                await access.close()
                raise TransientError(f"events table: cannot create: {exc}".splitlines()[0][:300]) from exc
            queue = FanoutQueue(access, self.settings.fanout_queue)
            await queue.ensure()
            self._loop, self._table, self._queue = loop, table, queue
            self._service, self._access = service, access
        return self._table, self._queue

    async def aclose(self) -> None:
        service, access, queue = self._service, self._access, self._queue
        self._service, self._access, self._table, self._queue, self._loop = None, None, None, None, None
        if service is not None:
            await service.close()  # its table clients share its transport
        if queue is not None:
            await queue.close()
        if access is not None:
            await access.close()  # the managed identity's credential, if one was made

    def _for(self, state: DesiredState) -> tuple[Screen, ResourceIndex]:
        if self._rules is None or self._rules[0] != id(state):
            self._rules = (
                id(state),
                Screen.for_state(state, self._own, self.settings.event_max_age),
                ResourceIndex(state),
            )
        return self._rules[1], self._rules[2]

    # ---- one event ------------------------------------------------------------------------------

    async def handle(self, envelope: Mapping[str, Any], state: DesiredState, now: datetime | None = None) -> Outcome:
        """Screen one delivered event and queue (or join) a targeted pass per affected target.

        Cheap rejections first (shape, type, topic, age, caller, resource) so unrelated events cost
        no storage call. A storage failure raises TransientError: the function fails and Event Grid
        delivers the event again (its seen-row is removed, so the retry is not taken for a replay).
        """
        now = now or datetime.now(UTC)
        outcome = await self._handle(envelope, state, now)
        self.counts[outcome.verdict] += 1
        if outcome.verdict in (Verdict.ACCEPTED, Verdict.UNRELATED, Verdict.SELF):
            log.info("event %s %s", outcome.verdict.value, outcome.reason, extra={"event_verdict": outcome.verdict})
        else:
            # Warning level: a forged or malformed delivery is worth an App Insights query.
            log.warning("event rejected (%s): %s", outcome.verdict.value, outcome.reason,
                        extra={"event_verdict": outcome.verdict})  # fmt: skip
        return outcome

    async def _handle(self, envelope: Mapping[str, Any], state: DesiredState, now: datetime) -> Outcome:
        if isinstance(envelope, Mapping) and is_validation(envelope):
            # The host's Event Grid extension answers the handshake; a validation event reaching
            # the function is not ours to act on.
            return Outcome(Verdict.UNRELATED, reason="subscription validation event")
        try:
            ev = parse(envelope)
        except Rejected as exc:
            return Outcome(exc.verdict, reason=exc.reason)
        if ev.kind is None:
            return Outcome(Verdict.UNRELATED, reason=f"event type {ev.event_type[:80]}")
        rules, index = self._for(state)
        try:
            screen(ev, rules, now)
        except Rejected as exc:
            return Outcome(exc.verdict, reason=f"{exc.reason} (event {ev.id[:40]})")
        hits = index.affected(ev.resource_uri)
        if not hits:
            return Outcome(Verdict.UNRELATED, reason=f"{ev.operation[:100]} on a resource no target uses")
        table, queue = await self._clients()
        if not await self._first_sight(table, ev.id, now):
            return Outcome(Verdict.REPLAYED, reason=f"event {ev.id[:40]} was already handled")
        change = ev.attribution()
        enqueued: list[str] = []
        try:
            for hit in hits:
                if await self._schedule(table, queue, hit.target, change, now, self.pacing):
                    enqueued.append(hit.target)
        except (AzureError, TransientError) as exc:
            await self._forget(table, ev.id)
            raise TransientError(f"event {ev.id[:40]}: {exc}".splitlines()[0][:300]) from exc
        what = ", ".join(f"{h.target} ({h.kind.value})" for h in hits)
        return Outcome(
            Verdict.ACCEPTED,
            targets=tuple(h.target for h in hits),
            enqueued=tuple(enqueued),
            reason=f"{change.describe()} -> {what}",
        )

    # ---- one NVA change report ------------------------------------------------------------------

    async def handle_report(
        self, headers: Mapping[str, str], body: bytes, state: DesiredState, now: datetime | None = None
    ) -> Outcome:
        """Authenticate an agent's change report (reconciler.change_report) and queue (or join) a
        targeted pass for every target that peers with that NVA. Same counters as events."""
        now = now or datetime.now(UTC)
        outcome = await self._handle_report(dict(headers), body, state, now)
        self.counts[outcome.verdict] += 1
        level = logging.INFO if outcome.verdict in (Verdict.ACCEPTED, Verdict.SELF) else logging.WARNING
        log.log(level, "agent report %s: %s", outcome.verdict.value, outcome.reason,
                extra={"event_verdict": outcome.verdict})  # fmt: skip
        return outcome

    async def _handle_report(self, headers: dict[str, str], body: bytes, state: DesiredState, now: datetime) -> Outcome:
        try:
            ip = change_report.peek_ip(body)
        except Rejected as exc:
            return Outcome(exc.verdict, reason=exc.reason)
        peers = [(t.name, p) for t in state.targets for p in t.peers if str(p.ip) == ip]
        tokens = {self.settings.secret(p.token_setting) for _, p in peers if p.token_setting}
        keys = [change_report.report_key(tok) for tok in sorted(t for t in tokens if t)]
        if not keys:
            return Outcome(Verdict.FORGED, reason=f"no agent with a token is declared at {ip}")
        report = None
        last: Rejected | None = None
        for key in keys:
            try:
                report = change_report.verify(headers, body, key, now)
                break
            except Rejected as exc:
                last = exc
        if report is None:
            assert last is not None
            return Outcome(last.verdict, reason=f"{last.reason} (report from {ip})")
        if report.by is change_report.ChangedBy.AGENT:
            return Outcome(Verdict.SELF, reason=f"{ip}: the agent's own change (a fix it applied)")
        table, queue = await self._clients()
        if not await self._first_sight(table, "nonce-" + report.nonce, now):
            return Outcome(Verdict.REPLAYED, reason=f"nonce from {ip} was already used")
        change = report.attribution()
        targets = sorted({t for t, _ in peers})
        enqueued = []
        try:
            for target in targets:
                if await self._schedule(table, queue, target, change, now, self.report_pacing):
                    enqueued.append(target)
        except (AzureError, TransientError) as exc:
            # The function answers 5xx and the agent sends the report again: the nonce must not
            # stay spent, or that retry (or a proxy's resend of the same request) is a "replay".
            await self._forget(table, "nonce-" + report.nonce)
            raise TransientError(f"report from {ip}: {exc}".splitlines()[0][:300]) from exc
        return Outcome(
            Verdict.ACCEPTED, tuple(targets), tuple(enqueued), f"{change.describe()} -> {', '.join(targets)}"
        )

    async def _first_sight(self, table: TableClient, event_id: str, now: datetime) -> bool:
        try:
            await table.create_entity({"PartitionKey": "seen", "RowKey": encode_key(event_id), "at": now})
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise TransientError(f"events table: {exc}".splitlines()[0][:300]) from exc
        return True

    async def _forget(self, table: TableClient, event_id: str) -> None:
        try:
            await table.delete_entity("seen", encode_key(event_id))
        except AzureError:
            log.warning("could not forget %s; a redelivery will be taken for a replay", event_id[:40])

    async def _schedule(
        self, table: TableClient, queue: FanoutQueue, target: str, change: Attribution, now: datetime, pacing: Pacing
    ) -> bool:
        """Mark `target` pending and queue its pass, or join the pending one. True if a pass was queued."""
        for _ in range(_CONFLICT_TRIES):
            entity, etag = await _read(table, target)
            marker = _marker(entity)
            decision = decide(marker, now, pacing)
            changes = ([*_changes(entity), change])[-_CHANGES_KEPT:]
            row: dict[str, Any] = {
                "PartitionKey": "pending",
                "RowKey": target,
                "pending": True,
                "changes": json.dumps([c.to_dict() for c in changes]),
            }
            if isinstance(decision, Enqueue):
                row["enqueued_at"] = now
            elif marker is not None and marker.enqueued_at is not None:
                row["enqueued_at"] = marker.enqueued_at
            if marker is not None and marker.last_run_at is not None:
                row["last_run_at"] = marker.last_run_at
            if not await _write(table, row, etag):
                continue  # another delivery changed the marker: decide again on what it wrote
            if isinstance(decision, Coalesce):
                return False
            message = FanoutMessage(target, now, origin=Trigger.EVENT)
            try:
                await queue.enqueue([message], self.message_ttl_s, delay_s=decision.delay_s)
            except TransientError:
                # No message went out: the marker must not claim one is pending, or the retried
                # delivery would join a pass that never runs.
                row["pending"] = False
                try:
                    await table.upsert_entity(row, mode=UpdateMode.REPLACE)
                except AzureError:
                    log.warning("target %s: pending marker left set; it lapses after %.0f s", target,
                                self.pacing.lost_after_s)  # fmt: skip
                raise
            return True
        log.warning("target %s: pending marker kept changing; this event joins the pass already queued", target)
        return False

    async def claim(self, target: str, now: datetime | None = None) -> list[Attribution]:
        """The queue worker starts an event pass: clear the marker (later events queue the next
        pass) and take the changes that asked for this one, for the ledger's "changed by"."""
        now = now or datetime.now(UTC)
        table, _queue = await self._clients()
        for _ in range(_CONFLICT_TRIES):
            entity, etag = await _read(table, target)
            if entity is None:
                return []
            row = {"PartitionKey": "pending", "RowKey": target, "pending": False, "last_run_at": now, "changes": "[]"}
            if await _write(table, row, etag):
                return _changes(entity)
        return []


async def _read(table: TableClient, target: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        entity = await table.get_entity("pending", target)
    except ResourceNotFoundError:
        return None, None
    except AzureError as exc:
        raise TransientError(f"events table: {exc}".splitlines()[0][:300]) from exc
    return dict(entity), entity.metadata.get("etag")


async def _write(table: TableClient, row: dict[str, Any], etag: str | None) -> bool:
    """Create (no etag) or replace-if-unchanged; False when another writer got there first."""
    try:
        if etag is None:
            await table.create_entity(row)
        else:
            await table.update_entity(
                row, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
    except ResourceExistsError:
        return False
    except HttpResponseError as exc:
        if exc.status_code in (409, 412):
            return False
        raise TransientError(f"events table: {exc}".splitlines()[0][:300]) from exc
    return True


def _marker(entity: Mapping[str, Any] | None) -> Marker | None:
    if entity is None:
        return None
    return Marker(bool(entity.get("pending")), _utc(entity.get("enqueued_at")), _utc(entity.get("last_run_at")))


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _changes(entity: Mapping[str, Any] | None) -> list[Attribution]:
    if entity is None:
        return []
    try:
        items = json.loads(entity.get("changes") or "[]")
    except ValueError:
        return []
    out = [Attribution.from_dict(i) for i in items] if isinstance(items, list) else []
    return [a for a in out if a is not None]


def envelope(event: Any) -> dict[str, Any]:
    """The event the Functions trigger decoded (EventGridEvent or CloudEvent) as its JSON envelope."""
    if hasattr(event, "specversion"):
        at = getattr(event, "time", None)
        return {
            "specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
            "subject": event.subject, "time": at.isoformat() if isinstance(at, datetime) else at,
            "data": event.get_json(),
        }  # fmt: skip
    at = getattr(event, "event_time", None)
    return {
        "id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
        "eventTime": at.isoformat() if isinstance(at, datetime) else at, "data": event.get_json(),
        "dataVersion": event.data_version,
    }  # fmt: skip


# What the agent is told, by verdict: it retries only 5xx and network errors (a 4xx never improves).
_REPORT_STATUS = {
    Verdict.ACCEPTED: 202,
    Verdict.SELF: 200,
    Verdict.UNRELATED: 200,
    Verdict.REPLAYED: 409,
    Verdict.MALFORMED: 400,
    Verdict.FORGED: 401,
    Verdict.STALE: 401,
}


def change_report_answer(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for an agent's change report. No reason for a rejection: a forger learns nothing."""
    status = _REPORT_STATUS[outcome.verdict]
    body: dict[str, Any] = {"verdict": outcome.verdict.value}
    if status < 300:
        body["targets"] = list(outcome.targets)
    return status, body
