"""NCRONTAB schedules (reconciler.schedule): next firing and tick length."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.schedule import ScheduleError, parse

T = datetime(2026, 11, 25, 8, 7, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expr", "after", "interval"),
    [
        ("0 */5 * * * *", datetime(2026, 11, 25, 8, 10, tzinfo=UTC), timedelta(minutes=5)),
        ("*/30 * * * * *", datetime(2026, 11, 25, 8, 8, tzinfo=UTC), timedelta(seconds=30)),
        ("0 0 * * * *", datetime(2026, 11, 25, 9, 0, tzinfo=UTC), timedelta(hours=1)),
        ("0 30 9 * * 1-5", datetime(2026, 11, 25, 9, 30, tzinfo=UTC), timedelta(days=1)),
        ("0 0 6 * * 0", datetime(2026, 11, 29, 6, 0, tzinfo=UTC), timedelta(days=7)),
        ("0 0 6 * * 7", datetime(2026, 11, 29, 6, 0, tzinfo=UTC), timedelta(days=7)),
        ("0 5,35 * * * *", datetime(2026, 11, 25, 8, 35, tzinfo=UTC), timedelta(minutes=30)),
        ("0 0 0 29 2 *", datetime(2028, 2, 29, tzinfo=UTC), timedelta(days=366 * 4 - 1 + 1)),
    ],
)
def test_next_firing_and_interval(expr: str, after: datetime, interval: timedelta) -> None:
    s = parse(expr)
    assert s.next_after(T) == after
    if expr != "0 0 0 29 2 *":
        assert s.interval(T) == interval


def test_next_after_is_strictly_after() -> None:
    at = datetime(2026, 11, 25, 8, 10, tzinfo=UTC)
    assert parse("0 */5 * * * *").next_after(at) == at + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("*/5 * * * *", "6 fields"),
        ("0 60 * * * *", "minute"),
        ("0 */0 * * * *", "minute"),
        ("0 0 0 * JAN *", "month"),
        ("0 0 0 31 2 *", "never fires"),
        ("0 5-1 * * * *", "minute"),
        ("0 ² * * * *", "minute"),
    ],
)
def test_bad_schedules_name_the_field(expr: str, field: str) -> None:
    with pytest.raises(ScheduleError, match=field):
        parse(expr).next_after(T)
