"""`Retry-After` read once for every HTTP adapter (Teams, the NVA agent): seconds or an HTTP-date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from reconciler.retry_after import retry_after

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "3600"}, 60.0),  # the caller's cap
        ({"Retry-After": "soon"}, None),
        # an HTTP-date, measured against the server's Date (our clock may disagree with its)
        ({"Retry-After": format_datetime(T0 + timedelta(seconds=30), usegmt=True),
          "Date": format_datetime(T0, usegmt=True)}, 30.0),
        # RFC 5322's "-0000" zone gives a naive datetime: read as UTC, not a crash
        ({"Retry-After": "Wed, 02 Dec 2026 12:00:20 -0000", "Date": format_datetime(T0, usegmt=True)}, 20.0),
        ({"Retry-After": format_datetime(T0, usegmt=True), "Date": format_datetime(T0 + timedelta(seconds=9))}, 0.0),
    ],
)  # fmt: skip
def test_retry_after_reads_seconds_and_dates_within_the_cap(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(headers, cap=60.0) == expected
