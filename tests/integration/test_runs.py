"""The HTTP run's life after its request (reconciler.runs.carry) when its record cannot be written."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

import pytest

from localenv.azurite import ACCOUNT, ACCOUNT_KEY
from reconciler.fanout import FanoutQueue
from reconciler.runs import Run, RunStatus, RunStore, carry
from reconciler.service import PassReport
from reconciler.trigger import Trigger


def _unreachable_storage() -> str:
    # A port that was free a moment ago: nothing listens there, so every request fails fast.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/{ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base};QueueEndpoint={base};"
    )


async def test_a_pass_whose_run_record_cannot_be_written_still_returns_its_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = _unreachable_storage()
    store, queue = RunStore(conn, retries=0), FanoutQueue(conn, "ars-reconcile", retries=0)
    now = datetime.now(UTC)
    run = Run("0123456789ab", RunStatus.RUNNING, now, True, None)

    async def the_pass() -> PassReport:
        return PassReport(run.pass_id, Trigger.HTTP, now, dry_run=True)

    try:
        with caplog.at_level(logging.ERROR, logger="reconciler.runs"):
            report = await carry(store, queue, run, ("msg-id", "pop-receipt"), the_pass(), timeout_s=5)
    finally:
        await store.close()
        await queue.close()
    # The waiting client still gets its report; on-call sees why a poller keeps seeing "running".
    assert report.pass_id == run.pass_id
    (record,) = [r for r in caplog.records if r.name == "reconciler.runs"]
    assert "pass 0123456789ab: cannot record its run: run records: write run 0123456789ab" in record.getMessage()
