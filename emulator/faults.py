"""Fault injection: what can go wrong on an ARM (or agent) request, and which request it hits.

Owns the Fault value (built with the class-method constructors) and FaultBook, the thread-safe list
of armed faults that the server consults per request by operation name, subscription and resource
names. It must not know HTTP plumbing or the world model.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from enum import Enum


class FaultKind(Enum):
    THROTTLE = "throttle"  # 429 + Retry-After
    ERROR = "error"  # any status with an ARM error body
    LATENCY = "latency"  # slow answer, then the normal one
    LRO_FAILED = "lro_failed"  # the long-running operation ends with status Failed
    EMPTY_INSTANCES = "empty_instances"  # learned/advertised map `{}` (ARS maintenance)
    BUSY = "busy"  # 409 AnotherOperationInProgress (DESIGN §11.9)
    MALFORMED = "malformed"  # a body that is not JSON
    BODY = "body"  # a given JSON value instead of the answer (a shape Azure produces, or garbage)


# Statuses the SDK retries when Retry-After is present; on anything else the header would turn a
# permanent error into a retried one (notes §8), so the emulator refuses to send it there.
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclasses.dataclass(frozen=True)
class Fault:
    """One armed misbehaviour. `count` None = fires forever; otherwise it fires that many times."""

    kind: FaultKind
    count: int | None = 1
    status: int = 500
    code: str = "InternalServerError"
    message: str = "injected fault"
    retry_after: float | None = None
    seconds: float = 0.0
    payload: object = None  # BODY: the JSON value to answer with

    @classmethod
    def throttle(cls, count: int | None = 1, retry_after: float = 0) -> Fault:
        """429 TooManyRequests. A fractional retry_after is sent as-is (plus `retry-after-ms`); ARM itself
        only sends whole seconds, so code that parses Retry-After with int() should use whole values."""
        return cls(FaultKind.THROTTLE, count, 429, "TooManyRequests", "injected throttling", retry_after=retry_after)

    @classmethod
    def error(
        cls,
        status: int = 500,
        count: int | None = 1,
        code: str | None = None,
        message: str = "injected fault",
        retry_after: float | None = None,
    ) -> Fault:
        if retry_after is not None and status not in RETRY_AFTER_STATUSES:
            raise ValueError("Retry-After is only sent with 429 or 503")
        return cls(FaultKind.ERROR, count, status, code or _default_code(status), message, retry_after)

    @classmethod
    def latency(cls, seconds: float, count: int | None = None) -> Fault:
        return cls(FaultKind.LATENCY, count, seconds=seconds)

    @classmethod
    def lro_failed(
        cls, count: int | None = 1, code: str = "RouteServerBusy", message: str = "simulated failure"
    ) -> Fault:
        return cls(FaultKind.LRO_FAILED, count, 200, code, message)

    @classmethod
    def empty_instances(cls, count: int | None = 1) -> Fault:
        return cls(FaultKind.EMPTY_INSTANCES, count, 200)

    @classmethod
    def busy(cls, count: int | None = 1) -> Fault:
        return cls(
            FaultKind.BUSY,
            count,
            409,
            "AnotherOperationInProgress",
            "Another operation on this or dependent resource is in progress.",
        )

    @classmethod
    def body(cls, payload: object, count: int | None = 1) -> Fault:
        """Answer with `payload` (any JSON value) instead of the real body or LRO result, status 200."""
        return cls(FaultKind.BODY, count, 200, payload=payload)

    @classmethod
    def malformed(cls, count: int | None = 1) -> Fault:
        return cls(FaultKind.MALFORMED, count, 200)


def _default_code(status: int) -> str:
    return {
        400: "BadRequest",
        403: "AuthorizationFailed",
        404: "ResourceNotFound",
        409: "Conflict",
        429: "TooManyRequests",
        500: "InternalServerError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
    }.get(status, "InjectedError")


@dataclasses.dataclass
class _Armed:
    op: str
    fault: Fault
    subscription: str | None
    resource: str | None
    remaining: int | None


class FaultBook:
    """Armed faults in injection order. `take` consumes one firing of each matching fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []

    def inject(self, op: str, fault: Fault, subscription: str | None = None, resource: str | None = None) -> None:
        if fault.count is not None and fault.count < 1:
            raise ValueError("count must be >= 1 or None")
        with self._lock:
            self._armed.append(_Armed(op, fault, subscription, resource, fault.count))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, op: str, subscription: str | None, names: Iterable[str]) -> tuple[float, Fault | None]:
        """Seconds of injected latency to add, and the first matching non-latency fault (if any)."""
        lowered = {n.lower() for n in names}
        delay = 0.0
        chosen: Fault | None = None
        with self._lock:
            for armed in self._armed:
                if armed.op != op or armed.remaining == 0:
                    continue
                if armed.subscription is not None and (
                    subscription is None or armed.subscription.lower() != subscription.lower()
                ):
                    continue
                if armed.resource is not None and armed.resource.lower() not in lowered:
                    continue
                if armed.fault.kind is FaultKind.LATENCY:
                    delay += armed.fault.seconds
                elif chosen is None:
                    chosen = armed.fault
                else:
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
            self._armed = [a for a in self._armed if a.remaining != 0]
        return delay, chosen
