"""Quest periods in the member's local time (else the program's timezone).

DAILY is a local calendar day, WEEKLY an ISO week (Monday to Monday), MONTHLY a calendar
month, ONCE a single period that never ends. Periods are stored as UTC instants of their
local boundaries, so a member who changes timezone keeps the periods already started.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CADENCES = ("DAILY", "WEEKLY", "MONTHLY", "ONCE")
ONCE_START = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime | None  # None: never ends (ONCE)
    local_day: date  # the member's local date of the moment the period was computed for


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def period_for(cadence: str, moment: datetime, timezone: str) -> Period:
    zone = ZoneInfo(timezone)
    local_day = moment.astimezone(zone).date()
    if cadence == "ONCE":
        return Period(ONCE_START, None, local_day)
    if cadence == "DAILY":
        first, last = local_day, local_day + timedelta(days=1)
    elif cadence == "WEEKLY":
        first = local_day - timedelta(days=local_day.weekday())
        last = first + timedelta(days=7)
    elif cadence == "MONTHLY":
        first = local_day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown cadence {cadence!r}")
    return Period(_local_midnight(first, zone), _local_midnight(last, zone), local_day)
