"""HTTP-requested passes that outlive their request: the run record behind `GET /api/runs/{pass_id}`.

Azure ends an HTTP-triggered function's response at 230 s whatever `functionTimeout` says
("Regardless of the function app timeout setting, 230 seconds is the maximum amount of time that an
HTTP triggered function can take to respond to a request", https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout),
and a worst-case pass is longer. So `POST /api/reconcile` answers 202 with `Location:
/api/runs/{pass_id}` when its pass has not finished within `ARS_HTTP_WAIT` (the asynchronous
request-reply pattern, https://learn.microsoft.com/azure/architecture/patterns/async-request-reply),
and the client polls the run here.

Owns the run record (one JSON blob per pass id: `running` with the request, then `done` with the
HTTP status and the pass report) and its blob adapter. Must not know how a pass runs or how the
run is carried on after the request (function_app: the worker's loop, with a queue message as the
fallback when the worker goes away).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from reconciler.storage import StorageAccess, blob_service
from reconciler.storage_rules import storage_error

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
