"""The timer schedule: Azure Functions NCRONTAB expressions (six fields, seconds first), pure.

Owns parsing a schedule and answering "when does it fire next" and "how far apart are ticks",
which health staleness and fan-out message lifetimes need. Must not know about triggers or I/O.
Supports what Functions documents: `*`, numbers, `a-b`, `a,b`, `*/n`, `a-b/n`; day-of-week
0-6 with 0 = Sunday (7 is accepted as Sunday too); day-of-month and day-of-week must both match.
Month and day names are not supported (say so rather than guess).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# (name, low, high) per field, in NCRONTAB order.
_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_SEARCH_DAYS = 4 * 366  # a 29 February schedule fires at least once in four years


class ScheduleError(ValueError):
    """The expression is not a six-field NCRONTAB schedule this module understands."""


@dataclass(frozen=True)
class Schedule:
    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def next_after(self, at: datetime) -> datetime:
        """The first firing strictly after `at` (same tzinfo; Functions schedules run in UTC)."""
        start = at.replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        for _ in range(_SEARCH_DAYS):
            # isoweekday: Monday 1 .. Sunday 7; NCRONTAB: Sunday 0.
            if day.month in self.months and day.day in self.days and day.isoweekday() % 7 in self.weekdays:
                for h in self.hours:
                    for m in self.minutes:
                        for s in self.seconds:
                            candidate = day.replace(hour=h, minute=m, second=s)
                            if candidate >= start:
                                return candidate
            day += timedelta(days=1)
        raise ScheduleError(f"schedule {self.expression!r} never fires")

    def interval(self, at: datetime) -> timedelta:
        """The gap between the next two firings after `at`: how long one tick is expected to last."""
        first = self.next_after(at)
        return self.next_after(first) - first


def parse(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB schedule; ScheduleError names the field that is wrong."""
    parts = expression.split()
    if len(parts) != 6:
        raise ScheduleError(
            f"expected 6 fields (second minute hour day month day-of-week), got {len(parts)}: {expression!r}"
        )
    values = [_field(text, name, lo, hi) for text, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(0 if d == 7 else d for d in values[5])
    return Schedule(
        expression=expression,
        seconds=tuple(sorted(values[0])),
        minutes=tuple(sorted(values[1])),
        hours=tuple(sorted(values[2])),
        days=frozenset(values[3]),
        months=frozenset(values[4]),
        weekdays=weekdays,
    )


def _field(text: str, name: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = _int(step_text, name) if step_text else 1
        if step < 1:
            raise ScheduleError(f"{name}: step must be at least 1 in {item!r}")
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _int(a, name), _int(b, name)
        else:
            first = _int(base, name)
            last = hi if step_text else first  # `5/10` means from 5 every 10
        if not lo <= first <= last <= hi:
            raise ScheduleError(f"{name}: {item!r} is outside {lo}-{hi}")
        out.update(range(first, last + 1, step))
    return out


def _int(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is True
        raise ScheduleError(f"{name}: {text!r} is not a number (names like MON or JAN are not supported)")
    return int(text)
