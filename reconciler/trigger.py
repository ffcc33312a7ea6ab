"""What starts a pass, or queues a fan-out message for one: one closed set.

Owns `Trigger`, shared by the pass report, the ledger's pass rows, the logs and the fan-out
message's `origin`; its values are the text those rows and messages store. Pure: it must not know
how a pass runs or where a trigger is stored.
"""

from __future__ import annotations

from enum import StrEnum


class Trigger(StrEnum):
    TIMER = "timer"  # the timer function (and the fan-out messages its tick sends)
    HTTP = "http"  # POST /api/reconcile (and the fallback message that carries its pass)
    QUEUE = "queue"  # a fan-out message worked by the queue function
    EVENT = "event"  # an ARM event or an NVA change report (reconciler.event_intake)
    CLI = "cli"  # `python -m reconciler apply`
    CLI_PLAN = "cli-plan"  # `python -m reconciler plan` (a dry run; never stored)
    DEMO = "demo"  # the local demo (localenv.demo)
    DEMO_PLAN = "demo-plan"  # its dry runs
    BENCH = "bench"  # the fleet bench (bench.fleet)
