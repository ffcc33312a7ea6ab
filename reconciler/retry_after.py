"""How long an HTTP answer asks us to wait before asking again: the one reading of `Retry-After`.

Owns the header's two forms (RFC 9110 §10.2.3: `delay-seconds` or an `HTTP-date`), measured
against the server's own `Date` when it sends one (clocks disagree), and the caller's cap. Pure
(stdlib only); must not know which service answered or what the caller retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after(headers: Mapping[str, str], cap: float) -> float | None:
    """Seconds to wait, within [0, cap]; None when the header is absent or unreadable."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        try:
            reference = parsedate_to_datetime(headers["Date"])
        except (KeyError, TypeError, ValueError):
            reference = datetime.now(UTC)
        seconds = (_aware(when) - _aware(reference)).total_seconds()
    return min(max(seconds, 0.0), cap)


def _aware(at: datetime) -> datetime:
    # parsedate_to_datetime gives a naive datetime for a "-0000" zone (RFC 5322: UTC, source unknown)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
