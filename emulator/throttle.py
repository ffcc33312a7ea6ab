"""ARM's per-subscription token-bucket throttling, as a benchmark cost the emulator can switch on.

Owns the Throttle settings and the buckets (one reads bucket and one writes bucket per subscription,
the way ARM's 2024 throttling model works). The clock is injected so the arithmetic is testable
without waiting. It must not know HTTP or which request is which beyond "read" or "write".
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Throttle:
    """Token-bucket sizes. Defaults are ARM's published per-subscription limits for reads and writes."""

    bucket: int = 250
    """Reads (GET, and the POST route queries) a subscription may burst."""
    refill_per_s: float = 25.0
    """Read tokens added back per second."""
    write_bucket: int = 200
    """Writes (PUT, DELETE) a subscription may burst."""
    write_refill_per_s: float = 10.0
    """Write tokens added back per second."""


@dataclasses.dataclass
class _Bucket:
    tokens: float
    stamp: float


class Throttler:
    """Spends one token per request; says how long to wait (whole seconds, as ARM does) when empty."""

    def __init__(self, settings: Throttle, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, bool], _Bucket] = {}

    def spend(self, subscription: str, write: bool) -> tuple[int | None, int]:
        """(Retry-After seconds if throttled else None, tokens remaining after this request)."""
        size = self._settings.write_bucket if write else self._settings.bucket
        rate = self._settings.write_refill_per_s if write else self._settings.refill_per_s
        now = self._clock()
        with self._lock:
            b = self._buckets.setdefault((subscription.lower(), write), _Bucket(float(size), now))
            b.tokens = min(float(size), b.tokens + (now - b.stamp) * rate)
            b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return None, int(b.tokens)
            # The SDK crashes on a fractional Retry-After (notes §0.5), so round up to whole seconds.
            wait = math.ceil((1.0 - b.tokens) / rate) if rate > 0 else 60
            return max(1, wait), 0
