"""One writer per target: a blob lease in Azure Storage, held while a pass acts on a target.

Owns the lease container, one empty blob per target, acquiring, renewing and releasing. Must not
know what a pass does under the lease. A lease is a lock with expiry, not a fencing token: it is
renewed at a third of its duration, and a holder that lost it is told so when it lets go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import NoReturn

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob.aio import BlobClient, BlobLeaseClient, LinearRetry

from reconciler.errors import LockedError, TransientError, first_line
from reconciler.storage import StorageAccess, blob_service
from reconciler.storage_rules import encode_key, storage_error

log = logging.getLogger(__name__)

# Blob leases last 15..60 s (or forever, which a crashed worker would never give back).
_MIN_S, _MAX_S = 15, 60


def _fail(what: str, exc: AzureError) -> NoReturn:
    raise storage_error("target lease", what, exc) from exc  # the one mapping: reconciler.storage_rules


def _status(exc: AzureError) -> int | None:
    return exc.status_code if isinstance(exc, HttpResponseError) else None


class TargetLeases:
    """Leases over one storage account. Build once per worker; close it (or `async with`).

    `renewals` counts successful renewals, so a caller or a test can see the lease kept alive.
    """

    def __init__(
        self,
        connection_string: str | StorageAccess,
        container: str = "ars-leases",
        duration_s: int = 15,
        *,
        retries: int = 3,
    ) -> None:
        if not _MIN_S <= duration_s <= _MAX_S:
            raise ValueError(f"lease duration must be {_MIN_S}..{_MAX_S} s, not {duration_s}")
        self.duration_s = duration_s
        self.container = container
        self._service = blob_service(
            connection_string,
            # The blob SDK's default retry waits 15 s before the first retry; a pass would rather
            # hear "unavailable" quickly and try again next time.
            retry_policy=LinearRetry(backoff=1, random_jitter_range=1, retry_total=retries),
            connection_timeout=10,
            read_timeout=30,
        )
        self._container = self._service.get_container_client(container)
        self.renewals = 0

    async def __aenter__(self) -> TargetLeases:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._service.close()

    @asynccontextmanager
    async def hold(self, target: str) -> AsyncIterator[None]:
        """Hold `target`'s lease for the body. LockedError at once if another pass holds it.

        If renewal fails for longer than the lease lasts (or another holder took it), the body
        is not interrupted mid-action; leaving the block then raises TransientError so the pass
        records that its writes were not exclusive.
        """
        blob = self._container.get_blob_client(encode_key(target))
        lease = BlobLeaseClient(blob)
        await self._acquire(target, blob, lease)
        lost: list[str] = []
        renewer = asyncio.create_task(self._keep(target, lease, lost), name=f"lease-renew:{target}")
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            await self._release(target, lease)
        if lost:
            raise TransientError(f"target lease: lease on {target!r} was lost while held: {lost[0]}")

    async def _acquire(self, target: str, blob: BlobClient, lease: BlobLeaseClient) -> None:
        for first in (True, False):
            try:
                await lease.acquire(lease_duration=self.duration_s)
                return
            except ResourceNotFoundError as exc:
                if not first:
                    _fail(f"acquire lease for {target!r}", exc)
                await self._create_blob(target, blob)  # first use of this target (or container)
            except AzureError as exc:
                if _status(exc) == 409:  # LeaseAlreadyPresent: another pass holds it; do not wait
                    raise LockedError(target) from exc
                _fail(f"acquire lease for {target!r}", exc)

    async def _create_blob(self, target: str, blob: BlobClient) -> None:
        try:
            await self._container.create_container()
        except AzureError as exc:
            if _status(exc) != 409:  # ContainerAlreadyExists: a racing pass made it
                _fail(f"create lease container {self.container!r}", exc)
        try:
            await blob.upload_blob(b"", overwrite=False)
        except AzureError as exc:
            # 409 BlobAlreadyExists / 412 lease present: a racing pass made it (and may hold it).
            if _status(exc) not in (409, 412):
                _fail(f"create lease blob for {target!r}", exc)

    async def _keep(self, target: str, lease: BlobLeaseClient, lost: list[str]) -> None:
        interval = self.duration_s / 3
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await lease.renew()
                self.renewals += 1
                last_ok = time.monotonic()
            except AzureError as exc:
                if _status(exc) == 409 or time.monotonic() - last_ok >= self.duration_s:
                    # 409: the lease expired and someone else took it (LeaseIdMismatch...).
                    lost.append(f"{type(exc).__name__}: {first_line(exc)}")
                    log.warning("lease on %r lost while held: %s", target, lost[0])
                    return
                log.warning("lease on %r not renewed, will retry: %s", target, exc)

    async def _release(self, target: str, lease: BlobLeaseClient) -> None:
        try:
            await lease.release()
        except AzureError as exc:
            # Not worth failing the pass over: the lease runs out by itself within duration_s.
            log.warning("lease on %r not released (expires within %d s): %s", target, self.duration_s, exc)
