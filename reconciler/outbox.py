"""Alert persistence in Table Storage: alert states, and the outbox of Teams messages.

Owns two tables (`<prefix>alertstate`, `<prefix>alertoutbox`), their keys, and the delivery order
and exactly-once bookkeeping of queued messages. Must not know HTTP or what a card says: it hands
opaque payload bytes to a `Sender`.

Outbox partition (PartitionKey = target), by RowKey:
    counter            next sequence number (updated with its ETag, so concurrent enqueues serialize)
    key-<sha256>       idempotency index: "this key is already queued" (created in the same transaction)
    msg-<seq:016d>     one message: payload bytes, idempotency key, what it announces (identity → kind),
                       sent / dead flags, attempts, last error
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from reconciler.alerts import AlertState
from reconciler.errors import PermanentError, ReconcilerError, TransientError
from reconciler.storage import StorageAccess, table_service
from reconciler.storage_rules import Table, checked_table_prefix, encode_key, storage_error

log = logging.getLogger(__name__)

_MSG_LOW, _MSG_HIGH = "msg-", "msg."  # '.' sorts right after '-': a RowKey range scan of messages
_COUNTER = "counter"
_TXN_OPS = 100  # Table Storage's transaction limit
_FIELD_CHARS = 4_000  # keeps one state well under the 64 KiB property limit
_ENQUEUE_RETRIES = 10
# A message Teams rejects (400/413) is tried on this many flushes (one per pass), then dead-lettered:
# a rejection can be Teams' own hiccup, but a card it will never take must not block the target.
MAX_REJECTIONS = 3


class MessageRejected(PermanentError):
    """Raised by a Sender: the receiver rejected this message's content (Teams 400/413). The outbox
    tries it again on the next MAX_REJECTIONS - 1 flushes, then dead-letters it and moves on,
    instead of blocking the target forever."""


class Sender(Protocol):
    """Delivers one payload. Raise TransientError to retry on a later flush, PermanentError when
    the endpoint refuses everything (nothing is dropped), MessageRejected for a poisoned message."""

    async def send(self, payload: bytes, idempotency_key: str) -> None: ...


@dataclass(frozen=True)
class OutboxEntry:
    target: str
    seq: int
    idempotency_key: str
    payload: bytes
    sent: bool
    dead: bool
    attempts: int
    last_error: str
    announces: Mapping[str, str] = field(default_factory=dict)  # identity → alert kind


@dataclass(frozen=True)
class FlushReport:
    """`failed`: targets whose delivery stopped at a failure (their messages stay queued, in order);
    `pending`: messages still queued for the flushed targets; `rejected`: messages Teams rejected
    this flush; `dead`: those of them dead-lettered now (rejected MAX_REJECTIONS times)."""

    sent: int = 0
    failed: int = 0
    pending: int = 0
    rejected: int = 0
    errors: tuple[str, ...] = ()
    dead: tuple[OutboxEntry, ...] = ()


def _announces(raw: object) -> dict[str, str]:
    try:
        data = json.loads(str(raw)) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def idempotency_key(pass_id: str, target: str) -> str:
    """The key of a pass's message for one target: a retried pass (same id) enqueues nothing new."""
    return hashlib.sha256(f"{pass_id}\n{target}".encode()).hexdigest()


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:40]


class AlertStore:
    """Alert states and outbox over one storage account. Use `async with AlertStore(...) as store`."""

    def __init__(self, connection_string: str | StorageAccess, table_prefix: str, *, retry_total: int = 3) -> None:
        """`retry_total`: the SDK's own retries per request. Few: a pass must not hang on a storage
        outage; the outbox makes the next pass the retry."""
        table_prefix = checked_table_prefix(table_prefix)
        self._service = table_service(connection_string, retry_total=retry_total)
        self._states: TableClient = self._service.get_table_client(Table.ALERT_STATE.of(table_prefix))
        self._outbox: TableClient = self._service.get_table_client(Table.ALERT_OUTBOX.of(table_prefix))
        self._ready = False

    async def __aenter__(self) -> AlertStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._states.close()
        await self._outbox.close()
        await self._service.close()

    async def _ensure_tables(self) -> None:
        if self._ready:
            return
        try:
            await self._service.create_table_if_not_exists(self._states.table_name)
            await self._service.create_table_if_not_exists(self._outbox.table_name)
        except AzureError as exc:
            raise storage_error("alert store", "creating alert tables", exc) from exc
        self._ready = True

    # --- alert states -------------------------------------------------------------------------

    async def load_states(self, targets: Collection[str]) -> dict[str, AlertState]:
        await self._ensure_tables()
        states: dict[str, AlertState] = {}
        try:
            for target in targets:
                pk = {"pk": encode_key(target)}
                async for entity in self._states.query_entities("PartitionKey eq @pk", parameters=pk):
                    try:
                        state = AlertState.from_dict(json.loads(entity["state"]))
                    except (KeyError, ValueError, TypeError) as exc:
                        # One unreadable row must not silence every alert of the target.
                        log.warning("skipping unreadable alert state %s/%s: %s", target, entity.get("RowKey"), exc)
                        continue
                    states[state.identity] = state
        except AzureError as exc:
            raise storage_error("alert store", "loading alert states", exc) from exc
        return states

    async def save_states(self, states: Mapping[str, AlertState], targets: Collection[str]) -> None:
        """Make the stored states of `targets` exactly those in `states` (others are deleted)."""
        await self._ensure_tables()
        try:
            for target in targets:
                pk = encode_key(target)
                mine = {_hash(s.identity): s for s in states.values() if s.target == target}
                stored = {
                    e["RowKey"]
                    async for e in self._states.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": pk}, select=["RowKey"]
                    )
                }
                ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
                    ("upsert", self._state_entity(pk, rk, s), {"mode": UpdateMode.REPLACE}) for rk, s in mine.items()
                ]
                ops += [("delete", {"PartitionKey": pk, "RowKey": rk}, {}) for rk in stored - mine.keys()]
                for i in range(0, len(ops), _TXN_OPS):
                    await self._states.submit_transaction(ops[i : i + _TXN_OPS])
        except (AzureError, TableTransactionError) as exc:
            raise storage_error("alert store", "saving alert states", exc) from exc

    @staticmethod
    def _state_entity(pk: str, rk: str, state: AlertState) -> dict[str, Any]:
        data = state.to_dict()
        for name in ("message", "expected", "observed"):
            data[name] = data[name][:_FIELD_CHARS]
        return {
            "PartitionKey": pk, "RowKey": rk, "identity": state.identity[:_FIELD_CHARS],
            "status": state.status.value, "state": json.dumps(data),
        }

    # --- outbox -------------------------------------------------------------------------------

    async def enqueue(
        self, target: str, payload: bytes, key: str, announces: Mapping[str, str] | None = None
    ) -> bool:
        """Queue `payload` after every earlier message of `target`. False if `key` was already queued.
        `announces` (identity → alert kind) travels with it, for un-announcing a dead letter."""
        await self._ensure_tables()
        pk = encode_key(target)
        index = {"PartitionKey": pk, "RowKey": f"key-{_hash(key)}"}
        try:
            for _ in range(_ENQUEUE_RETRIES):
                if await self._exists(pk, index["RowKey"]):
                    return False
                counter = await self._get(pk, _COUNTER)
                seq = int(counter["next"]) if counter else 1
                bump: tuple[str, dict[str, Any], dict[str, Any]]
                if counter is None:
                    bump = ("create", {"PartitionKey": pk, "RowKey": _COUNTER, "next": seq + 1}, {})
                else:
                    bump = ("update", {"PartitionKey": pk, "RowKey": _COUNTER, "next": seq + 1}, {
                        "mode": UpdateMode.REPLACE, "etag": counter.metadata["etag"],
                        "match_condition": MatchConditions.IfNotModified,
                    })
                entry = {
                    "PartitionKey": pk, "RowKey": f"{_MSG_LOW}{seq:016d}", "target": target,
                    "key": key, "payload": payload, "sent": False, "dead": False, "attempts": 0,
                    "last_error": "", "created": datetime.now(UTC),
                    "announces": json.dumps(dict(announces or {}))[:_FIELD_CHARS * 8],
                }
                try:
                    # One transaction: sequence, index and message appear together or not at all.
                    await self._outbox.submit_transaction(
                        [bump, ("create", {**index, "seq": seq}, {}), ("create", entry, {})]
                    )
                    return True
                except TableTransactionError as exc:
                    if exc.status_code in (409, 412):
                        continue  # lost a race for the counter (412) or the key (409): look again
                    raise
        except AzureError as exc:
            raise storage_error("alert store", f"enqueueing a message for {target}", exc) from exc
        raise TransientError(f"enqueueing a message for {target}: counter contended {_ENQUEUE_RETRIES} times")

    async def _get(self, pk: str, rk: str) -> Any:
        try:
            return await self._outbox.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    async def _exists(self, pk: str, rk: str) -> bool:
        return await self._get(pk, rk) is not None

    async def pending(self, targets: Collection[str] | None = None) -> list[OutboxEntry]:
        """Queued (unsent, not dead-lettered) messages in delivery order, per target."""
        await self._ensure_tables()
        query = "RowKey ge @low and RowKey lt @high and sent eq false and dead eq false"
        params: dict[str, Any] = {"low": _MSG_LOW, "high": _MSG_HIGH}
        try:
            if targets is None:
                entities = [e async for e in self._outbox.query_entities(query, parameters=params)]
            else:
                entities = []
                for target in targets:
                    entities += [
                        e async for e in self._outbox.query_entities(
                            "PartitionKey eq @pk and " + query, parameters={**params, "pk": encode_key(target)}
                        )
                    ]
        except AzureError as exc:
            raise storage_error("alert store", "reading the outbox", exc) from exc
        entries = [self._entry(e) for e in entities]
        return sorted(entries, key=lambda e: (encode_key(e.target), e.seq))

    async def entries(self, target: str) -> list[OutboxEntry]:
        """Every message ever queued for `target` (sent or not), in order; for inspection and tests."""
        await self._ensure_tables()
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        params = {"pk": encode_key(target), "low": _MSG_LOW, "high": _MSG_HIGH}
        try:
            return [self._entry(e) async for e in self._outbox.query_entities(query, parameters=params)]
        except AzureError as exc:
            raise storage_error("alert store", "reading the outbox", exc) from exc

    @staticmethod
    def _entry(entity: Mapping[str, Any]) -> OutboxEntry:
        return OutboxEntry(
            target=str(entity["target"]), seq=int(str(entity["RowKey"])[len(_MSG_LOW):]),
            idempotency_key=str(entity["key"]), payload=bytes(entity["payload"]), sent=bool(entity["sent"]),
            dead=bool(entity["dead"]), attempts=int(entity["attempts"]), last_error=str(entity["last_error"]),
            announces=_announces(entity.get("announces")),
        )

    async def dead_letters(self, target: str, since: datetime) -> list[OutboxEntry]:
        """Messages of `target` dead-lettered since `since` (what /api/health reports)."""
        await self._ensure_tables()
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high and dead eq true and Timestamp ge @since"
        params = {"pk": encode_key(target), "low": _MSG_LOW, "high": _MSG_HIGH, "since": since}
        try:
            return [self._entry(e) async for e in self._outbox.query_entities(query, parameters=params)]
        except AzureError as exc:
            raise storage_error("alert store", "reading dead letters", exc) from exc

    async def flush(self, sender: Sender, targets: Collection[str] | None = None) -> FlushReport:
        """Deliver queued messages in order per target; a target stops at its first failure so its
        order holds. Call it under the target's lease: two concurrent flushes could both send."""
        queued = await self.pending(targets)
        sent = failed = rejected = 0
        errors: list[str] = []
        dead: list[OutboxEntry] = []
        stopped: set[str] = set()
        for entry in queued:
            if entry.target in stopped:
                continue
            try:
                await sender.send(entry.payload, entry.idempotency_key)
            except MessageRejected as exc:
                rejected += 1
                attempts = entry.attempts + 1
                if attempts < MAX_REJECTIONS:
                    # Keep order: the target waits for this message until the next flush.
                    stopped.add(entry.target)
                    errors.append(f"{entry.target} #{entry.seq}: rejected ({attempts}/{MAX_REJECTIONS}): {exc}")
                    await self._mark(entry, attempts=attempts, last_error=str(exc)[:1000])
                    continue
                errors.append(f"{entry.target} #{entry.seq}: dead-lettered after {attempts} rejections: {exc}")
                await self._mark(entry, dead=True, attempts=attempts, last_error=str(exc)[:1000])
                dead.append(replace(entry, dead=True, attempts=attempts, last_error=str(exc)[:1000]))
                continue
            except ReconcilerError as exc:
                failed += 1
                stopped.add(entry.target)
                errors.append(f"{entry.target} #{entry.seq}: {exc}")
                await self._mark(entry, attempts=entry.attempts + 1, last_error=str(exc)[:1000])
                continue
            # A crash between send and this mark resends on the next flush: at-least-once on the
            # wire, which is why the idempotency key travels as a header.
            await self._mark(entry, sent=True, attempts=entry.attempts + 1, last_error="",
                             sent_at=datetime.now(UTC))
            sent += 1
        remaining = len(await self.pending(targets))
        return FlushReport(sent=sent, failed=failed, pending=remaining, rejected=rejected, errors=tuple(errors),
                           dead=tuple(dead))

    async def _mark(self, entry: OutboxEntry, **changes: Any) -> None:
        entity = {"PartitionKey": encode_key(entry.target), "RowKey": f"{_MSG_LOW}{entry.seq:016d}", **changes}
        try:
            await self._outbox.update_entity(entity, mode=UpdateMode.MERGE)
        except AzureError as exc:
            raise storage_error("alert store", f"recording delivery of {entry.target} #{entry.seq}", exc) from exc
