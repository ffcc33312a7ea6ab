"""HTTP-requested passes that outlive their request: the run record behind `GET /api/runs/{pass_id}`.

Azure ends an HTTP-triggered function's response at 230 s whatever `functionTimeout` says
("Regardless of the function app timeout setting, 230 seconds is the maximum amount of time that an
HTTP triggered function can take to respond to a request", https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout),
and a worst-case pass is longer. So `POST /api/reconcile` answers 202 with `Location:
/api/runs/{pass_id}` when its pass has not finished within `ARS_HTTP_WAIT` (the asynchronous
request-reply pattern, https://learn.microsoft.com/azure/architecture/patterns/async-request-reply),
and the client polls the run here.

Owns the run record (one JSON blob per pass id: `running` with the request, then `done` with the
HTTP status and the pass report), its blob adapter, and the run's life after the request: `carry`
runs the pass to its end, records its answer and drops the fallback queue message; a fallback that
comes due carries on an `unfinished` run; a poisoned fallback `give_up`s with an error answer.
Must not know how a pass runs (the trigger hands `carry` the pass) or when the fallback comes due
(function_app: the host's queue rules).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from reconciler import http_api
from reconciler.errors import ReconcilerError
from reconciler.fanout import FanoutQueue
from reconciler.storage import StorageAccess, blob_service
from reconciler.storage_rules import storage_error

if TYPE_CHECKING:
    from reconciler.service import PassReport

log = logging.getLogger("reconciler.runs")

CONTAINER = "ars-runs"
# A run record only has to outlive its polls (minutes); a week leaves room for a look after an
# incident. The pass itself stays in the ledger for ARS_RETENTION_DAYS. Purged by retention_timer.
RUN_KEEP = timedelta(days=7)
PASS_ID = re.compile(r"^[0-9a-f]{12}$")  # service.new_pass_id()


class RunStatus(Enum):
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class Run:
    """One HTTP-requested pass: what was asked, and once done the answer the POST would have given."""

    pass_id: str
    status: RunStatus
    requested_at: datetime
    dry_run: bool
    target: str | None
    http_status: int | None = None
    report: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "pass_id": self.pass_id,
                "status": self.status.value,
                "requested_at": self.requested_at.isoformat(),
                "dry_run": self.dry_run,
                "target": self.target,
                "http_status": self.http_status,
                "report": dict(self.report),
            },
            default=str,
        ).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Run:
        d = json.loads(raw)
        return cls(
            pass_id=d["pass_id"],
            status=RunStatus(d["status"]),
            requested_at=datetime.fromisoformat(d["requested_at"]),
            dry_run=bool(d["dry_run"]),
            target=d["target"],
            http_status=d["http_status"],
            report=d["report"] or {},
        )

    def answered(self, answer: http_api.ApiResponse) -> Run:
        """This run, done, with the answer its POST gave or would have given."""
        return replace(self, status=RunStatus.DONE, http_status=answer.status, report=json.loads(answer.json_bytes()))

    def to_dict(self) -> dict[str, Any]:
        """The plain values `http_api.run_response` answers a poll with."""
        return {
            "pass_id": self.pass_id,
            "status": self.status.value,
            "requested_at": self.requested_at,
            "dry_run": self.dry_run,
            "target": self.target,
            "http_status": self.http_status,
            "report": dict(self.report),
        }


class RunStore:
    """Run records in one blob container. Build once per worker; close it."""

    def __init__(self, connection_string: str | StorageAccess, container: str = CONTAINER, *, retries: int = 3) -> None:
        self._service = blob_service(
            connection_string, retry_total=retries, connection_timeout=10, read_timeout=30
        )
        self._container = self._service.get_container_client(container)

    async def ensure(self) -> None:
        try:
            await self._container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise storage_error("run records", "create the container", exc) from exc

    async def put(self, run: Run) -> None:
        try:
            await self._container.upload_blob(
                f"{run.pass_id}.json",
                run.to_json(),
                overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
            )
        except AzureError as exc:
            raise storage_error("run records", f"write run {run.pass_id}", exc) from exc

    async def get(self, pass_id: str) -> Run | None:
        if not PASS_ID.match(pass_id):
            return None
        try:
            stream = await self._container.download_blob(f"{pass_id}.json")
            return Run.from_json(await stream.readall())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error("run records", f"read run {pass_id}", exc) from exc

    async def unfinished(self, pass_id: str) -> Run | None:
        """The run a fallback message names, when it still needs running; None when it is unknown or done."""
        run = await self.get(pass_id)
        if run is None:
            log.warning("run %s: no record; nothing to carry on", pass_id, extra={"pass_id": pass_id})
            return None
        if run.status is RunStatus.DONE:
            return None
        log.warning("run %s: its worker did not finish it; running it here", pass_id, extra={"pass_id": pass_id})
        return run

    async def give_up(self, pass_id: str, reason: str) -> None:
        """A run whose fallback message was poisoned: its poller gets an error, not 202 forever."""
        run = await self.get(pass_id)
        if run is None or run.status is RunStatus.DONE:
            return
        await self.put(run.answered(http_api.error(500, "run_failed", f"the pass could not be run: {reason}"[:500])))

    async def purge(self, cutoff: datetime, *, batch: int = 100, pause: float = 0.2) -> int:
        """Delete run records last written before `cutoff`, pausing between batches; returns how many."""
        deleted = 0
        try:
            async for blob in self._container.list_blobs():
                if blob.last_modified is None or blob.last_modified >= cutoff:
                    continue
                try:
                    await self._container.delete_blob(blob.name)
                except ResourceNotFoundError:
                    continue  # another worker's purge got it first
                deleted += 1
                if deleted % batch == 0:
                    await asyncio.sleep(pause)
        except AzureError as exc:
            raise storage_error("run records", f"purge (deleted {deleted})", exc) from exc
        return deleted

    async def close(self) -> None:
        await self._service.close()


async def carry(
    store: RunStore,
    queue: FanoutQueue,
    run: Run,
    receipt: tuple[str, str] | None,
    the_pass: Awaitable[PassReport],
    *,
    timeout_s: float,
) -> PassReport:
    """Run an HTTP-requested pass to its end (bounded like any function by functionTimeout), then
    record its answer for /api/runs/{pass_id} and drop the fallback message (`receipt`; None when
    this is the fallback, which the host deletes when the function returns)."""
    async with asyncio.timeout(timeout_s):
        report = await the_pass
    try:
        await store.put(run.answered(http_api.reconcile_response(report.to_dict(), run.target)))
        if receipt is not None:
            await queue.forget(receipt)
    except ReconcilerError as exc:
        # The report still reaches a waiting client; a poller sees "running" until the fallback
        # message runs the pass again and records it.
        log.error("pass %s: cannot record its run: %s", run.pass_id, exc, extra={"pass_id": run.pass_id})
    return report
