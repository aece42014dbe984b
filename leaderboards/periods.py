"""Board periods in the program timezone.

DAILY is a local calendar day, WEEKLY an ISO week (Monday 00:00 to Monday 00:00), MONTHLY a
calendar month, ALL_TIME one period that never ends. Boundaries are local midnights turned
into UTC instants (so a DST day is 23 or 25 hours long).

Every period has a short, stable id, used in Redis keys, in the archive and by clients
(``leaderboard(key, period: "2026-11-23")``): ``2026-11-23`` (DAILY), ``2026-W48`` (WEEKLY,
ISO year and week), ``2026-11`` (MONTHLY), ``all`` (ALL_TIME).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAILY, WEEKLY, MONTHLY, ALL_TIME = "DAILY", "WEEKLY", "MONTHLY", "ALL_TIME"
PERIOD_KINDS = (DAILY, WEEKLY, MONTHLY, ALL_TIME)
ALL_TIME_ID = "all"

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    kind: str
    id: str
    start: datetime | None  # None: ALL_TIME
    end: datetime | None  # None: ALL_TIME (never ends)

    def contains(self, moment: datetime) -> bool:
        return (self.start is None or self.start <= moment) and (
            self.end is None or moment < self.end
        )


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _first_day(kind: str, day: date) -> date:
    if kind == DAILY:
        return day
    if kind == WEEKLY:
        return day - timedelta(days=day.weekday())
    if kind == MONTHLY:
        return day.replace(day=1)
    raise ValueError(f"unknown period {kind!r}")


def _next_first_day(kind: str, first: date) -> date:
    if kind == DAILY:
        return first + timedelta(days=1)
    if kind == WEEKLY:
        return first + timedelta(days=7)
    return (first + timedelta(days=32)).replace(day=1)


def _period_id(kind: str, first: date) -> str:
    if kind == DAILY:
        return first.isoformat()
    if kind == WEEKLY:
        year, week, _ = first.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return f"{first.year:04d}-{first.month:02d}"


def _from_first_day(kind: str, first: date, zone: ZoneInfo) -> Period:
    return Period(
        kind,
        _period_id(kind, first),
        _midnight(first, zone),
        _midnight(_next_first_day(kind, first), zone),
    )


def period_at(kind: str, moment: datetime, timezone: str) -> Period:
    """The period of ``kind`` that contains ``moment`` (an aware datetime)."""
    if kind == ALL_TIME:
        return Period(ALL_TIME, ALL_TIME_ID, None, None)
    zone = ZoneInfo(timezone)
    local_day = moment.astimezone(zone).date()
    return _from_first_day(kind, _first_day(kind, local_day), zone)


def following(period: Period, timezone: str) -> Period:
    """The period right after ``period`` (ALL_TIME has none: it is returned itself)."""
    if period.end is None:
        return period
    return period_at(period.kind, period.end, timezone)


def preceding(period: Period, timezone: str) -> Period:
    if period.start is None:
        return period
    return period_at(period.kind, period.start - timedelta(microseconds=1), timezone)


def parse_period(kind: str, text: str, timezone: str) -> Period:
    """The period of ``kind`` named by ``text``: its id, or (for WEEKLY and MONTHLY) any date
    inside it. Raises ``ValueError`` with a message for the client."""
    text = text.strip()
    if kind == ALL_TIME:
        if text.lower() != ALL_TIME_ID:
            raise ValueError('an ALL_TIME board has a single period: "all"')
        return Period(ALL_TIME, ALL_TIME_ID, None, None)
    zone = ZoneInfo(timezone)
    try:
        if match := _DAY.match(text):
            day = date(int(match[1]), int(match[2]), int(match[3]))
            return _from_first_day(kind, _first_day(kind, day), zone)
        if kind == WEEKLY and (match := _WEEK.match(text)):
            return _from_first_day(
                kind, date.fromisocalendar(int(match[1]), int(match[2]), 1), zone
            )
        if kind == MONTHLY and (match := _MONTH.match(text)):
            return _from_first_day(kind, date(int(match[1]), int(match[2]), 1), zone)
    except ValueError:
        pass
    examples = {DAILY: "2026-11-23", WEEKLY: "2026-W48 or a date", MONTHLY: "2026-11 or a date"}
    raise ValueError(f"period must look like {examples[kind]} for a {kind} board, got {text!r}")
