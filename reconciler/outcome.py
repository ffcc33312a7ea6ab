"""What became of a step of the plan, or of a drift the plan left alone: one closed set.

Owns `ActionOutcome`, the one step-result enum the service, the ledger, the report and the cards
share. Pure: no I/O, and it must not know how a step runs or where an outcome is stored.
"""

from __future__ import annotations

from enum import StrEnum


class ActionOutcome(StrEnum):
    """A step's result (or a drift's, when no step was run for it).

    `APPLIED` only lives between running a step and verifying it: `service.verify` turns it into
    FIXED or NOT_CONFIRMED before anything is reported or recorded.
    """

    APPLIED = "applied"  # the write went through; verification has not run yet
    FIXED = "fixed"  # applied and the re-observation no longer shows the drift
    NOT_CONFIRMED = "not_confirmed"  # applied, but the drift is still there or could not be re-read
    DEFERRED = "deferred"  # not done now, on purpose: busy (409), throttled, unavailable, timed out
    FAILED = "failed"  # refused or broken: retrying as is will not help, a human looks
    SKIPPED = "skipped"  # the plan left this drift alone, with a reason
    PLANNED = "planned"  # dry run: what would have been done

    @property
    def final(self) -> bool:
        """True for every outcome a report or the ledger may hold."""
        return self is not ActionOutcome.APPLIED
