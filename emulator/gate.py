"""What every request passes before its handler: added latency, ARM's throttling, injected faults.

Owns their order (latency, then the subscription's token bucket, then the armed fault) and how an
injected error is answered: an ARM error body, or the agent's `{"detail": ...}`. A fault that
shapes the answer instead (a failed LRO, an empty map, a malformed or substituted body) is handed
back to the handler; `reshape` applies the body faults to a plain answer. It must not know routes
or the world.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from .faults import RETRY_AFTER_STATUSES, Fault, FaultBook, FaultKind
from .messages import MALFORMED_BODY, Response, agent_error, arm_error
from .throttle import Throttle, Throttler

WRITE_METHODS = frozenset({"PUT", "DELETE", "PATCH"})  # ARM's write bucket; everything else reads
_ANSWERED = frozenset({FaultKind.THROTTLE, FaultKind.ERROR, FaultKind.BUSY})  # the gate answers these itself


class Gate:
    """Latency per op name or HTTP method, ARM's token buckets (optional), and the armed faults."""

    def __init__(self, latency: dict[str, float], throttle: Throttle | None) -> None:
        self.latency = latency  # seconds per op name or lower-case HTTP method
        self.faults = FaultBook()
        self._throttler = Throttler(throttle) if throttle is not None else None

    async def enter(
        self, op: str, method: str, subscription: str | None, names: Iterable[str], *, arm: bool
    ) -> Response | Fault | None:
        """An answer that ends the request here, a fault for the handler to apply, or None."""
        fault_delay, fault = self.faults.take(op, subscription, names)
        delay = self.latency.get(op, self.latency.get(method.lower(), 0.0)) + fault_delay
        if delay > 0:
            await asyncio.sleep(delay)
        if arm and subscription is not None and self._throttler is not None:
            write = method in WRITE_METHODS
            wait, _remaining = self._throttler.spend(subscription, write)
            if wait is not None:
                return arm_error(
                    429,
                    "SubscriptionRequestsThrottled",
                    f"Number of {'write' if write else 'read'} requests for subscription '{subscription}' "
                    f"exceeded the limit. Please try again after '{wait}' seconds.",
                    {"Retry-After": str(wait)},
                )
        if fault is None or fault.kind not in _ANSWERED:
            return fault
        headers: dict[str, str] = {}
        if fault.retry_after is not None and fault.status in RETRY_AFTER_STATUSES:
            # azure-core's retry parses Retry-After as a float (only the LRO poller insists on int),
            # so a fractional value lets tests wait 50 ms instead of a whole second.
            ra = fault.retry_after
            headers["Retry-After"] = str(int(ra)) if ra == int(ra) else f"{ra:g}"
            if ra != int(ra):
                headers["retry-after-ms"] = str(round(ra * 1000))
        if not arm:
            return agent_error(fault.status, f"{fault.code}: {fault.message}", headers)
        return arm_error(fault.status, fault.code, fault.message, headers)


def reshape(resp: Response, fault: Fault | None, *, substitute: bool = True) -> Response:
    """A successful plain answer with a body fault applied: truncated JSON, or (ARM) the given payload."""
    if fault is None or resp.status >= 300:
        return resp
    if fault.kind is FaultKind.MALFORMED:
        resp.body = MALFORMED_BODY
    elif fault.kind is FaultKind.BODY and substitute:
        resp.body = json.dumps(fault.payload).encode()
    return resp
