"""Advancing a member's progress on a quest: one upsert per (member, quest, period).

The upsert takes the progress row's lock, so concurrent events for one member and quest are
applied one after the other; a period that has completed is never touched again (the
``WHERE status = 'IN_PROGRESS'`` of the update), and only the event whose update crossed the
target is marked as the completing one. Together: a quest completes at most once per period.

How each aggregate advances (``day`` is the member's local date of the event):
- COUNT: +1 per event.
- SUM: + the event's numeric ``property`` (exact; shown rounded down).
- DISTINCT_DAYS: +1 for the first event of each local day in the period.
- STREAK_DAYS: consecutive local days: +1 when the day follows the last one, back to 1 after
  a gap; an event for a day already counted (or a late one, before it) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from quests.definitions import QuestDef
from quests.periods import Period

_NEW_PROGRESS = {
    "COUNT": "qp.progress + 1",
    "SUM": "qp.progress + CAST(:amount AS numeric)",
    "DISTINCT_DAYS": (
        "CASE WHEN CAST(:day AS date) = ANY(qp.days) THEN qp.progress ELSE qp.progress + 1 END"
    ),
    "STREAK_DAYS": (
        "CASE WHEN qp.last_day IS NULL THEN 1"
        " WHEN CAST(:day AS date) = qp.last_day + 1 THEN qp.progress + 1"
        " WHEN CAST(:day AS date) <= qp.last_day THEN qp.progress ELSE 1 END"
    ),
}
_INITIAL_PROGRESS = {
    "COUNT": "1",
    "SUM": "CAST(:amount AS numeric)",
    "DISTINCT_DAYS": "1",
    "STREAK_DAYS": "1",
}

_TEMPLATE = """
INSERT INTO quest_progress AS qp (
    member_id, quest_id, period_start, period_end, progress, target, days, last_day,
    status, completed_by_event_id, completed_at, updated_at)
VALUES (
    :member_id, :quest_id, :period_start, :period_end, {initial}, CAST(:target AS bigint),
    ARRAY[CAST(:day AS date)], CAST(:day AS date),
    CASE WHEN {initial} >= CAST(:target AS bigint) THEN 'COMPLETED' ELSE 'IN_PROGRESS' END,
    CASE WHEN {initial} >= CAST(:target AS bigint) THEN CAST(:event_id AS bigint) END,
    CASE WHEN {initial} >= CAST(:target AS bigint) THEN CAST(:now AS timestamptz) END,
    CAST(:now AS timestamptz))
ON CONFLICT (member_id, quest_id, period_start) DO UPDATE SET
    progress = {new},
    days = CASE WHEN CAST(:day AS date) = ANY(qp.days) THEN qp.days
                ELSE qp.days || CAST(:day AS date) END,
    last_day = greatest(qp.last_day, CAST(:day AS date)),
    status = CASE WHEN {new} >= qp.target THEN 'COMPLETED' ELSE 'IN_PROGRESS' END,
    completed_by_event_id = CASE WHEN {new} >= qp.target THEN CAST(:event_id AS bigint) END,
    completed_at = CASE WHEN {new} >= qp.target THEN CAST(:now AS timestamptz) END,
    updated_at = CAST(:now AS timestamptz)
WHERE qp.status = 'IN_PROGRESS'
RETURNING id, progress, target, status, period_start, period_end,
          completed_by_event_id IS NOT DISTINCT FROM CAST(:event_id AS bigint)
              AND status <> 'IN_PROGRESS' AS completed_now
"""

UPSERT_SQL = {
    aggregate: text(_TEMPLATE.format(initial=_INITIAL_PROGRESS[aggregate], new=new))
    for aggregate, new in _NEW_PROGRESS.items()
}


@dataclass(frozen=True)
class ProgressUpdate:
    progress_id: int
    quest: QuestDef
    progress: Decimal
    target: int
    status: str
    period_start: datetime
    period_end: datetime | None
    completed_now: bool


async def advance(
    session: AsyncSession,
    *,
    member_id: int,
    quest: QuestDef,
    period: Period,
    day: date,
    amount: Decimal,
    event_id: int,
    now: datetime,
) -> ProgressUpdate | None:
    """Apply one event to the quest's progress; None when the period had already completed."""
    row = (
        await session.execute(
            UPSERT_SQL[quest.aggregate],
            {
                "member_id": member_id,
                "quest_id": quest.id,
                "period_start": period.start,
                "period_end": period.end,
                "target": quest.target,
                "day": day,
                "amount": amount,
                "event_id": event_id,
                "now": now,
            },
        )
    ).one_or_none()
    if row is None:
        return None
    return ProgressUpdate(
        progress_id=row.id,
        quest=quest,
        progress=row.progress,
        target=row.target,
        status=row.status,
        period_start=row.period_start,
        period_end=row.period_end,
        completed_now=bool(row.completed_now),
    )
