"""The drift ledger in Azure Table Storage: current drift state, append-only history, pass records.

Owns tables, key encoding, ETag-checked batched writes and the mapping of storage errors onto
reconciler.errors. Must not know how drift is found or fixed; the transitions are ledger_state's.

Tables (`{prefix}` from the caller, e.g. `ars`):

    {prefix}drift         PK enc(target)        RK enc(identity)             one row per identity
    {prefix}drifthistory  PK enc(target)        RK inv(at)-seq-uniq          a target's events
                          PK ~inv(day)          RK inv(at)-seq-uniq          all events (and poison)
    {prefix}passes        PK inv(day)           RK inv(started_at)-pass_id   one row per pass

`inv` = inverted time, so Table Storage's ascending (PK, RK) order reads newest first. History is
written twice (per target, per day) because a partition scan is the only cheap ordered read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, NoReturn

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.data.tables import TableTransactionError, UpdateMode

from reconciler.attribution import Attribution
from reconciler.drift import Drift
from reconciler.errors import TransientError
from reconciler.ledger_state import (
    ActionRecord,
    DriftRecord,
    DriftStatus,
    LedgerChange,
    PassRecord,
    transition,
)
from reconciler.outcome import ActionOutcome
from reconciler.storage import StorageAccess, table_service
from reconciler.storage_rules import KEY_MAX, Table, checked_table_prefix, encode_key, storage_error
from reconciler.trigger import Trigger

__all__ = [
    "ActionRecord",
    "DriftRecord",
    "Ledger",
    "LedgerChange",
    "PassRecord",
]

# Table Storage limits (learn.microsoft.com "Understanding the Table service data model").
_BATCH_MAX = 100  # operations per transaction, all in one partition
_PAGE_MAX = 1000  # entities per query page
# A string property may hold 64 KiB (UTF-16), an entity 1 MiB: clip free text well inside both.
_TEXT_MAX = 8000

# Keys of the all-targets history partitions start with `~`, which encode_key never emits first.
_GLOBAL = "~"
_MAX_US = 10**17 - 1  # microseconds since 1970 stay below this until the year 5138
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LIST_MAX = 30000  # characters of a JSON list property; 64 KiB of UTF-16 is 32768


def _inverted(at: datetime) -> str:
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{_MAX_US - micros:017d}"


def _inverted_day(at: datetime) -> str:
    return f"{99999999 - int(at.astimezone(UTC).strftime('%Y%m%d')):08d}"


def _clip(text: str, limit: int = _TEXT_MAX) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[clipped {len(text) - limit} chars]"


def _utc(value: Any) -> datetime:
    # The SDK returns TablesEntityDatetime; a plain datetime compares and prints like our own.
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, tzinfo=UTC,
    )


def _plain(value: Any) -> Any:
    """An entity property as a plain Python value (EntityProperty → its value, datetimes → UTC)."""
    inner = getattr(value, "value", value)
    return _utc(inner) if isinstance(inner, datetime) else inner


def raise_storage_error(what: str, exc: AzureError) -> NoReturn:
    """Raise our error for a failed ledger request (the one mapping: reconciler.storage_rules)."""
    raise storage_error("drift ledger", what, exc) from exc


class _Conflict(Exception):
    """Another writer changed the target's rows between our read and our write."""


@dataclass(frozen=True)
class _Stored:
    record: DriftRecord
    etag: str


class Ledger:
    """The drift ledger over one storage account. Build once per worker; close it (or `async with`).

    `retries` bounds the SDK's own retries per request, so a storage outage turns into a
    TransientError in seconds instead of minutes. `requests` counts HTTP responses (retries
    included), for measuring what a pass costs.
    """

    def __init__(self, connection_string: str | StorageAccess, table_prefix: str = "ars", *, retries: int = 3) -> None:
        table_prefix = checked_table_prefix(table_prefix)
        self._service = table_service(
            connection_string,
            retry_total=retries,
            retry_backoff_factor=0.4,
            connection_timeout=10,
            read_timeout=30,
            raw_response_hook=self._count,
        )
        self.drift_table = Table.DRIFT.of(table_prefix)
        self.history_table = Table.HISTORY.of(table_prefix)
        self.passes_table = Table.PASSES.of(table_prefix)
        self._drift = self._service.get_table_client(self.drift_table)
        self._history = self._service.get_table_client(self.history_table)
        self._passes = self._service.get_table_client(self.passes_table)
        self.requests = 0

    def _count(self, _response: object) -> None:
        self.requests += 1

    @property
    def url(self) -> str:
        return str(self._service.url)

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        # Table clients share the service's transport; closing the service closes the session.
        await self._service.close()

    async def ensure_tables(self) -> None:
        for name in (self.drift_table, self.history_table, self.passes_table):
            try:
                await self._service.create_table_if_not_exists(name)
            except AzureError as exc:
                raise_storage_error(f"create table {name}", exc)

    # ---- current drift state -------------------------------------------------------------

    async def record_target(
        self,
        target: str,
        drifts: Sequence[Drift],
        actions: Sequence[ActionRecord],
        now: datetime,
        *,
        blind: bool,
        pass_id: str = "",
        changed_by: Attribution | None = None,
    ) -> LedgerChange:
        """Bring `target`'s rows to what this pass found; append the events to history.

        `pass_id` is written on every history event, so a pass's report can be checked against
        (and an incident traced back to) what the ledger holds.

        One partition query, then ETag-checked batches of at most 100 rows (only rows that
        changed). If another writer got in between (412/409/404 in a batch), read again and
        re-apply once: `transition` is idempotent for one `now`, so rows already written by a
        half-finished attempt are not counted twice. A second conflict is a TransientError.
        History is written after the state: the state is the truth, history may miss events
        if storage fails in between.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        for attempt in (1, 2):
            stored = await self._read_target(target)
            change = transition(
                target, [s.record for s in stored.values()], drifts, actions, now, blind=blind, changed_by=changed_by
            )
            try:
                await self._write_state(target, stored, change)
                break
            except _Conflict as exc:
                if attempt == 2:
                    raise TransientError(
                        f"drift ledger: target {target!r} was changed by another writer twice "
                        "while recording this pass; retry on a later pass"
                    ) from exc
        await self._write_history(target, stored, change, actions, now, pass_id)
        return change

    async def _read_target(self, target: str) -> dict[str, _Stored]:
        try:
            rows = self._drift.query_entities(
                "PartitionKey eq @pk", parameters={"pk": encode_key(target)}, results_per_page=_PAGE_MAX
            )
            stored: dict[str, _Stored] = {}
            async for row in rows:
                rec = _to_record(row)
                stored[rec.identity] = _Stored(rec, str(row.metadata["etag"]))
            return stored
        except AzureError as exc:
            raise_storage_error(f"read open drift of target {target!r}", exc)

    async def _write_state(self, target: str, stored: Mapping[str, _Stored], change: LedgerChange) -> None:
        checked = {"mode": UpdateMode.REPLACE, "match_condition": MatchConditions.IfNotModified}
        ops: list[tuple[Any, ...]] = []
        for rec in change.records:
            old = stored.get(rec.identity)
            if old is None:
                ops.append(("create", _to_entity(rec)))
            elif old.record != rec:
                ops.append(("update", _to_entity(rec), {**checked, "etag": old.etag}))
        for chunk in _chunks(ops, _BATCH_MAX):
            try:
                await self._drift.submit_transaction(chunk)
            except TableTransactionError as exc:
                # 412: a row changed since our read; 409: someone created it; 404: someone deleted it.
                if exc.status_code in (404, 409, 412) and getattr(exc, "error_code", None) != "TableNotFound":
                    raise _Conflict(str(exc)) from exc
                raise_storage_error(f"write drift state of target {target!r}", exc)
            except AzureError as exc:
                raise_storage_error(f"write drift state of target {target!r}", exc)

    async def open_drifts(self, target: str | None = None, severity: str | None = None) -> list[DriftRecord]:
        """Open drift, by target then identity. Without a target this scans the whole table."""
        clauses, params = ["status eq @status"], {"status": DriftStatus.OPEN.value}
        if target is not None:
            clauses.append("PartitionKey eq @pk")
            params["pk"] = encode_key(target)
        if severity is not None:
            clauses.append("severity eq @severity")
            params["severity"] = severity
        try:
            query = " and ".join(clauses)
            rows = self._drift.query_entities(query, parameters=params, results_per_page=_PAGE_MAX)
            return [_to_record(row) async for row in rows]
        except AzureError as exc:
            raise_storage_error("read open drift", exc)

    # ---- history -------------------------------------------------------------------------

    async def _write_history(
        self,
        target: str,
        before: Mapping[str, _Stored],
        change: LedgerChange,
        actions: Sequence[ActionRecord],
        now: datetime,
        pass_id: str,
    ) -> None:
        events: list[dict[str, Any]] = []
        for rec in change.opened:
            events.append(_event("opened", now, rec))
        for rec in change.resolved:
            events.append(_event("resolved", now, rec, duration_s=_seconds(rec)))
        for act in actions:
            old = before.get(act.identity)
            repeat = (
                old is not None
                and (old.record.last_action, old.record.last_outcome) == (act.action, act.outcome)
                and act.outcome in (ActionOutcome.SKIPPED, ActionOutcome.PLANNED)
            )
            if not repeat:  # the same skip or plan every pass is not news
                events.append({
                    "kind": "action", "at": now, "target": target, "identity": act.identity,
                    "action": _clip(act.action), "outcome": act.outcome.value, "detail": _clip(act.detail),
                })
        if pass_id:
            events = [{**e, "pass_id": pass_id} for e in events]
        await self._append_events(events, now, per_target=target, what=f"write history of target {target!r}")

    async def _append_events(
        self, events: list[dict[str, Any]], now: datetime, *, per_target: str | None, what: str
    ) -> None:
        if not events:
            return
        base, uniq = _inverted(now), uuid.uuid4().hex[:8]
        partitions = [f"{_GLOBAL}{_inverted_day(now)}"]
        if per_target is not None:
            partitions.insert(0, encode_key(per_target))
        for pk in partitions:
            # Later events of one write sort first, so newest-first holds inside one instant too.
            ops = [
                ("upsert", {**e, "PartitionKey": pk, "RowKey": f"{base}-{9999 - i:04d}-{uniq}"})
                for i, e in enumerate(events)
            ]
            for chunk in _chunks(ops, _BATCH_MAX):
                try:
                    await self._history.submit_transaction(chunk)
                except AzureError as exc:
                    raise_storage_error(what, exc)

    async def history(self, target: str | None = None, limit: int = 50) -> list[dict[str, object]]:
        """History events newest first: kind (opened/resolved/action/poison), at, target, identity, ..."""
        if target is None:
            query, params = "PartitionKey gt @pk", {"pk": _GLOBAL}
        else:
            query, params = "PartitionKey eq @pk", {"pk": encode_key(target)}
        out: list[dict[str, object]] = []
        try:
            page = min(max(limit, 1), _PAGE_MAX)
            rows = self._history.query_entities(query, parameters=params, results_per_page=page)
            async for row in rows:
                if len(out) >= limit:
                    break
                out.append({k: _plain(v) for k, v in row.items() if k not in ("PartitionKey", "RowKey")})
        except AzureError as exc:
            raise_storage_error("read history", exc)
        return out

    async def record_poison(self, message: str, reason: str, now: datetime) -> None:
        """A fan-out queue message that kept failing, kept in the all-targets history."""
        event = {
            "kind": "poison", "at": now, "target": "", "message": _clip(message), "detail": _clip(reason),
        }
        await self._append_events([event], now, per_target=None, what="record a poison message")

    # ---- passes --------------------------------------------------------------------------

    async def record_pass(self, record: PassRecord) -> None:
        at = record.started_at
        if at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware")
        entity = {
            "PartitionKey": _inverted_day(at),
            "RowKey": f"{_inverted(at)}-{encode_key(record.pass_id)}"[:KEY_MAX],
            "pass_id": record.pass_id,
            "trigger": record.trigger.value,
            "started_at": at,
            "duration_s": float(record.duration_s),
            "targets": _json_list(record.targets),
            "targets_count": len(record.targets),
            "counts": json.dumps(dict(record.counts), sort_keys=True),
            "errors": _json_list([_clip(e, 2000) for e in record.errors]),
            "errors_count": len(record.errors),
            "dry_run": record.dry_run,
        }
        try:
            await self._passes.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise_storage_error(f"record pass {record.pass_id!r}", exc)

    async def passes(self, limit: int = 20, target: str | None = None) -> list[PassRecord]:
        """Pass records newest first.

        With a target the filter runs here (Tables cannot search inside a list), scanning newest
        first until `limit` matches; a pass with more targets than fit one property (~700 names)
        only lists the first ones.
        """
        page = _PAGE_MAX if target is not None else min(max(limit, 1), _PAGE_MAX)
        out: list[PassRecord] = []
        try:
            rows = self._passes.list_entities(results_per_page=page)
            async for row in rows:
                if len(out) >= limit:
                    break
                rec = _to_pass(row)
                if target is None or target in rec.targets:
                    out.append(rec)
        except AzureError as exc:
            raise_storage_error("read passes", exc)
        return out


def _chunks(items: list[tuple[Any, ...]], size: int) -> Iterable[list[tuple[Any, ...]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _json_list(items: Sequence[str]) -> str:
    """A JSON list that fits one property: items past the limit are left out, never cut in half."""
    kept = list(items)
    text = json.dumps(kept)
    while len(text) > _LIST_MAX:
        kept = kept[: len(kept) * 9 // 10]
        text = json.dumps(kept)
    return text


def _seconds(rec: DriftRecord) -> float:
    d = rec.duration
    return 0.0 if d is None else d.total_seconds()


def _event(kind: str, now: datetime, rec: DriftRecord, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind, "at": now, "target": rec.target, "identity": rec.identity, "code": rec.code,
        "subject": rec.subject, "severity": rec.severity, "message": _clip(rec.message),
        "expected": _clip(rec.expected), "observed": _clip(rec.observed), "occurrences": rec.occurrences,
        **({"changed_by": rec.changed_by.describe()} if rec.changed_by is not None else {}),
        **extra,
    }


def _to_entity(rec: DriftRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": encode_key(rec.target),
        "RowKey": encode_key(rec.identity),
        "identity": rec.identity,
        "target": rec.target,
        "code": rec.code,
        "subject": rec.subject,
        "severity": rec.severity,
        "status": rec.status.value,
        "first_seen": rec.first_seen,
        "last_seen": rec.last_seen,
        "occurrences": rec.occurrences,
        "message": _clip(rec.message),
        "expected": _clip(rec.expected),
        "observed": _clip(rec.observed),
        "last_action": _clip(rec.last_action),
        "last_outcome": rec.last_outcome,
    }
    if rec.changed_by is not None:
        entity["changed_by"] = rec.changed_by.to_json()
    if rec.resolved_at is not None:  # Tables has no null: an absent property is the null
        entity["resolved_at"] = rec.resolved_at
    return entity


def _to_record(row: Mapping[str, Any]) -> DriftRecord:
    resolved_at = row.get("resolved_at")
    return DriftRecord(
        identity=str(row["identity"]),
        target=str(row["target"]),
        code=str(row["code"]),
        subject=str(row["subject"]),
        severity=str(row["severity"]),
        status=DriftStatus(row["status"]),
        first_seen=_utc(row["first_seen"]),
        last_seen=_utc(row["last_seen"]),
        resolved_at=None if resolved_at is None else _utc(resolved_at),
        occurrences=int(_plain(row["occurrences"])),
        message=str(row.get("message", "")),
        expected=str(row.get("expected", "")),
        observed=str(row.get("observed", "")),
        last_action=str(row.get("last_action", "")),
        last_outcome=str(row.get("last_outcome", "")),
        changed_by=Attribution.from_json(row.get("changed_by")),
    )


def _to_pass(row: Mapping[str, Any]) -> PassRecord:
    return PassRecord(
        pass_id=str(row["pass_id"]),
        trigger=Trigger(row["trigger"]),
        started_at=_utc(row["started_at"]),
        duration_s=float(_plain(row["duration_s"])),
        targets=tuple(json.loads(row["targets"])),
        counts={str(k): int(v) for k, v in json.loads(row["counts"]).items()},
        errors=tuple(json.loads(row["errors"])),
        dry_run=bool(row["dry_run"]),
    )
