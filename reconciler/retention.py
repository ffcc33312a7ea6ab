"""Retention: rows older than the retention setting leave the tables, in paced batches, once a day.

Owns what expires (sent Teams messages, resolved drift rows, drift history events, pass records),
the cutoff and the pacing. Knows only the column that dates each kind of row in the ledger's and
the outbox's tables (`ledger.py`, `outbox.py` own everything else about them). Time comes in as an
argument; the daily timer in `function_app.py` calls `Retention.purge`. It must not decide what
is current: the rows below are never touched.

Open drift, unsent or dead-lettered messages, alert states and the outbox counter never expire:
they are current state, not history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableTransactionError
from azure.data.tables.aio import TableClient

from reconciler.storage import StorageAccess, table_service
from reconciler.storage_rules import Table, storage_error

log = logging.getLogger(__name__)

# A transaction holds at most 100 operations, all in one partition (learn.microsoft.com,
# "Performing entity group transactions"). A partition serves about 2,000 entities/s ("Scalability
# and performance targets for Table storage"): the default pause keeps a purge far below that,
# so the passes that share the account never feel it.
BATCH_MAX = 100

# Daily, at an hour no 5-minute pass boundary lands on (NCRONTAB, seconds first, UTC).
SCHEDULE = "0 17 3 * * *"


@dataclass(frozen=True)
class RetentionPolicy:
    days: int = 90
    """Rows older than this many days are deleted (ARS_RETENTION_DAYS)."""
    pause: float = 0.2
    """Seconds between two delete batches: at most ~500 deletes a second."""
    max_batches: int = 1500
    """Batches per run (150,000 rows, ~5 minutes paced): a run ends well inside the function
    timeout, and what is left goes with the next day's run."""


@dataclass(frozen=True)
class _Expiry:
    what: str
    table: str
    query: str  # OData filter with @cutoff


@dataclass
class Purged:
    """What one run deleted, per kind of row; `complete` is False when `max_batches` stopped it."""

    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    complete: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"deleted": dict(self.deleted), "batches": self.batches, "complete": self.complete}


class Retention:
    """Purges one storage account's reconciler tables. `async with Retention(conn, prefix) as r`."""

    def __init__(
        self,
        connection_string: str | StorageAccess,
        table_prefix: str,
        policy: RetentionPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy or RetentionPolicy()
        self._sleep = sleep
        self._service = table_service(connection_string, retry_total=3)
        p = table_prefix
        self._expiries = (
            # Outbox rows: messages that were sent (`sent_at` set by the outbox when Teams took it)
            # and the idempotency index rows, dated by the service's own Timestamp.
            _Expiry("outbox", Table.ALERT_OUTBOX.of(p),
                    "RowKey ge 'msg-' and RowKey lt 'msg.' and sent eq true and sent_at lt @cutoff"),
            _Expiry("outbox", Table.ALERT_OUTBOX.of(p),
                    "RowKey ge 'key-' and RowKey lt 'key.' and Timestamp lt @cutoff"),
            _Expiry("drift", Table.DRIFT.of(p), "status eq 'resolved' and resolved_at lt @cutoff"),
            _Expiry("history", Table.HISTORY.of(p), "at lt @cutoff"),
            _Expiry("passes", Table.PASSES.of(p), "started_at lt @cutoff"),
        )  # fmt: skip

    async def __aenter__(self) -> Retention:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._service.close()

    def cutoff(self, now: datetime) -> datetime:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now - timedelta(days=self.policy.days)

    async def purge(self, now: datetime) -> Purged:
        """Delete every expired row (up to `max_batches` batches). A missing table has nothing to purge."""
        cutoff = self.cutoff(now)
        result = Purged()
        for exp in self._expiries:
            table = self._service.get_table_client(exp.table)
            try:
                done = await self._purge_one(table, exp, cutoff, result)
            finally:
                await table.close()
            if not done:
                result.complete = False
                break
        log.info(
            "retention: deleted %s older than %s in %d batch(es)%s",
            result.deleted, cutoff.isoformat(), result.batches, "" if result.complete else "; more next run",
            extra={"event": "ars.retention", "batches": result.batches, "complete": result.complete,
                   **{f"deleted_{k}": v for k, v in result.deleted.items()}},
        )  # fmt: skip
        return result

    async def _purge_one(self, table: TableClient, exp: _Expiry, cutoff: datetime, result: Purged) -> bool:
        """Delete the rows `exp` matches; False when the batch budget ran out first."""
        result.deleted.setdefault(exp.what, 0)
        while True:
            # Read one page of keys, delete it, read again: the deletes never race the query's
            # continuation token, and memory stays one page whatever the table holds.
            try:
                keys = await self._page(table, exp.query, cutoff)
            except ResourceNotFoundError:
                return True  # the table was never created: nothing expired
            except AzureError as exc:
                raise storage_error("retention", f"read {exp.table}", exc) from exc
            if not keys:
                return True
            by_partition: dict[str, list[str]] = {}
            for pk, rk in keys:
                by_partition.setdefault(pk, []).append(rk)
            for pk, rks in by_partition.items():
                for i in range(0, len(rks), BATCH_MAX):
                    if result.batches >= self.policy.max_batches:
                        return False
                    if result.batches:
                        await self._sleep(self.policy.pause)
                    result.deleted[exp.what] += await self._delete(table, pk, rks[i : i + BATCH_MAX])
                    result.batches += 1

    async def _page(self, table: TableClient, query: str, cutoff: datetime) -> list[tuple[str, str]]:
        rows = table.query_entities(
            query, parameters={"cutoff": cutoff}, select=["PartitionKey", "RowKey"], results_per_page=1000
        )
        keys: list[tuple[str, str]] = []
        async for page in rows.by_page():
            keys = [(str(e["PartitionKey"]), str(e["RowKey"])) async for e in page]
            break  # one page per round
        return keys

    async def _delete(self, table: TableClient, pk: str, rks: list[str]) -> int:
        ops: list[Any] = [("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in rks]
        try:
            await table.submit_transaction(ops)
            return len(ops)
        except TableTransactionError as exc:
            if exc.status_code != 404:
                raise storage_error("retention", f"delete from {table.table_name}", exc) from exc
        except AzureError as exc:
            raise storage_error("retention", f"delete from {table.table_name}", exc) from exc
        # 404: a row of the batch went meanwhile (another purge, a manual clean-up); the batch
        # failed whole, so delete one by one, each "already gone" being as good as deleted.
        for rk in rks:
            try:
                await table.delete_entity(pk, rk)
            except AzureError as exc:
                raise storage_error("retention", f"delete from {table.table_name}", exc) from exc
        return len(rks)
