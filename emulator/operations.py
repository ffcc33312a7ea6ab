"""Long-running operations: how a route query or a PUT answers the ARM way, and their polling.

Owns the operation store (bounded), the four ways a 202 points at its status (notes §5; the
`LroStyle` values in `world`), Retry-After, when an operation is done (poll rounds and wall time),
and what a shaping fault does to one (failed, empty, malformed, substituted). A PUT's world change
(provisioningState back to Succeeded) lands under the world lock when its operation ends.
It must not know ARM resource shapes or routes. Used from the server's event loop only.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable
from typing import get_args

from .faults import Fault, FaultKind
from .messages import MALFORMED_BODY, Response, arm_error, json_response
from .world import LroStyle, World

LRO_STYLES: tuple[LroStyle, ...] = get_args(LroStyle)
MAX_OPERATIONS = 20_000  # records kept for polling; the oldest half goes when full
API_VERSION = "2026-03-01"


@dataclasses.dataclass
class Operation:
    """A long-running operation in flight (a route query, a gateway query, a PUT)."""

    subscription: str
    names: tuple[str, ...]  # the resource names of the request, for faults scoped to a resource
    result: object
    failed: Fault | None
    malformed: bool
    polls_left: int
    ready_at: float
    on_done: Callable[[], None] | None = None  # a PUT's world change lands when the operation ends
    result_in_status: bool = False  # style "status-properties": the final status body carries the result


def style_for(world: World, default: str, op: str, subscription: str | None) -> str:
    """The style an operation answers in: the world's per-operation choice, the world's, or `default`."""
    with world.lock:
        chosen = next(
            (
                o.style
                for o in world.lro_styles
                if o.op == op and (o.subscription is None or (subscription or "").lower() == o.subscription.lower())
            ),
            None,
        )
        return chosen or world.lro_style or default


class Operations:
    """The operations the emulator started, by id. `locations(subscription)` is the URL their status
    and result URLs go below: `{base}/subscriptions/{s}/providers/Microsoft.Network/locations/{region}`."""

    def __init__(self, world: World, locations: Callable[[str], str], *, polls: int, seconds: float) -> None:
        self.world = world
        self.polls = polls
        self.seconds = seconds
        self._locations = locations
        self._ops: dict[str, Operation] = {}

    def start_query(
        self, subscription: str, names: tuple[str, ...], style: str, fault: Fault | None, result: object, empty: object
    ) -> Response:
        """202 for a POST whose result comes from polling; `empty` is the answer under an empty-instances fault."""
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.EMPTY_INSTANCES:
            result = empty
        elif fault is not None and kind is FaultKind.BODY:
            result = fault.payload
        failed = fault if kind is FaultKind.LRO_FAILED else None
        op_id, op = self._new(subscription, names, result=result, failed=failed, malformed=kind is FaultKind.MALFORMED)
        # With Azure-AsyncOperation alone the client holds only the status body at the end, which is
        # not the result (notes §5): Microsoft's examples answer that way, so the emulator can too.
        op.result_in_status = style == "status-properties"
        status_url, result_url = self._urls(subscription, op_id)
        headers = {"Retry-After": _retry_after(op)}
        if style in ("location", "both"):
            headers["Location"] = result_url
        if style in ("azure-async-operation", "both", "status-properties"):
            headers["Azure-AsyncOperation"] = status_url
        return Response(202, b"", headers)

    def start_update(
        self, subscription: str, names: tuple[str, ...], answer: object, done: Callable[[], None]
    ) -> Response:
        """A PUT the ARM way: 201 with the body in `Updating` and an Azure-AsyncOperation to poll.

        The world's provisioningState returns to Succeeded when the operation completes (the
        client's final GET of the resource then sees it); a client that never polls leaves it Updating.
        """
        op_id, op = self._new(subscription, names, result=None, failed=None, malformed=False, on_done=done)
        status_url, _ = self._urls(subscription, op_id)
        return json_response(201, answer, {"Azure-AsyncOperation": status_url, "Retry-After": _retry_after(op)})

    def names(self, op_id: str) -> tuple[str, ...]:
        """The resource names of the request that started `op_id` (none if unknown)."""
        op = self._ops.get(op_id)
        return op.names if op is not None else ()

    def poll(self, subscription: str, op_id: str, *, status_url: bool) -> Response:
        """One GET of the status URL (`status_url`) or the result URL (Location)."""
        op = self._ops.get(op_id)
        if op is None:
            return arm_error(404, "OperationNotFound", f"Operation '{op_id}' was not found.")
        ready = op.polls_left <= 0 and time.monotonic() >= op.ready_at
        if not ready:
            op.polls_left -= 1
        elif op.on_done is not None:
            on_done, op.on_done = op.on_done, None
            with self.world.lock:
                on_done()
        retry = {"Retry-After": _retry_after(op)}
        if status_url:
            if not ready:
                return json_response(200, {"status": "InProgress"}, retry)
            if op.failed is not None:
                return json_response(
                    200, {"status": "Failed", "error": {"code": op.failed.code, "message": op.failed.message}}
                )
            if op.result_in_status:
                return json_response(200, {"status": "Succeeded", "properties": op.result})
            return json_response(200, {"status": "Succeeded"})
        if not ready:
            return Response(202, b"", {"Location": self._urls(subscription, op_id)[1], **retry})
        if op.failed is not None:
            # Location-only polling: a failed operation answers its error (400 is not retried).
            return arm_error(400, op.failed.code, op.failed.message)
        if op.malformed:
            return Response(200, MALFORMED_BODY, {})
        return json_response(200, op.result)

    def _new(
        self,
        subscription: str,
        names: tuple[str, ...],
        *,
        result: object,
        failed: Fault | None,
        malformed: bool,
        on_done: Callable[[], None] | None = None,
    ) -> tuple[str, Operation]:
        op = Operation(
            subscription, names, result, failed, malformed, self.polls, time.monotonic() + self.seconds, on_done
        )
        if len(self._ops) >= MAX_OPERATIONS:
            # A long-running demo must not grow without bound; clients finish polling in seconds.
            for stale in list(self._ops)[: MAX_OPERATIONS // 2]:
                del self._ops[stale]
        op_id = uuid.uuid4().hex
        self._ops[op_id] = op
        return op_id, op

    def _urls(self, subscription: str, op_id: str) -> tuple[str, str]:
        base = self._locations(subscription)
        return (
            f"{base}/operations/{op_id}?api-version={API_VERSION}",
            f"{base}/operationResults/{op_id}?api-version={API_VERSION}",
        )


def _retry_after(op: Operation) -> str:
    # Only whole seconds: the SDK's initial-response parser crashes on "0.2" (notes §0.5).
    return str(max(0, math.ceil(op.ready_at - time.monotonic())))
