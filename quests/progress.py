"""Advancing a member's progress on the quests an event matched: ONE statement for all of
them, an upsert of one row per (member, quest, period).

The upsert takes each progress row's lock, so concurrent events for one member and quest are
applied one after the other; a period that has completed is never touched again (the
``WHERE status = 'IN_PROGRESS'`` of the update), and a row comes back as completed only from
the statement that completed it. Together: a quest completes at most once per period.

How each aggregate advances (``day`` is the member's local date of the event):
- COUNT: +1 per event.
- SUM: + the event's numeric ``property`` (exact; shown rounded down).
- DISTINCT_DAYS: +1 for the first event of each local day in the period.
- STREAK_DAYS: consecutive local days: +1 when the day follows the last one, back to 1 after
  a gap; an event for a day already counted (or a late one, before it) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quests.definitions import QuestDef
from quests.periods import Period
from server import rawsql

# In the update, EXCLUDED is the row the event would have inserted: its ``progress`` is the
# event's own contribution and its ``last_day`` the event's local day. ``quest_next_progress``
# (migration 0004) applies the aggregate rule above; ``aggregate`` and ``target`` are copied
# onto the row when its period starts, so editing a quest never changes a running period.
_NEXT = (
    "quest_next_progress(qp.aggregate, qp.progress, qp.days, qp.last_day,"
    " EXCLUDED.progress, EXCLUDED.last_day)"
)
# A row that completes keeps the rewards its quest has at that moment (editing the quest later
# changes nothing granted or claimable); an auto-claim quest's row is claimed at once (its
# rewards are granted in the same transaction). The update finds its quest's rewards in the
# statement's own arrays ($4 quest ids, $11 rewards, $12 auto-claim).
_QUEST_OF_ROW = (
    "FROM unnest($4::bigint[], $11::text[], $12::boolean[]) AS x(quest_id, rewards, auto)"
)
_COMPLETES = f"{_NEXT} >= qp.target"
_ROW_AUTO = f"(SELECT x.auto {_QUEST_OF_ROW} WHERE x.quest_id = qp.quest_id)"


def _day_already_counted(day: str) -> str:
    """An event changes nothing on a DISTINCT_DAYS or STREAK_DAYS row (``qp``) that already
    counts its ``day`` (SQL): the upsert skips such a row and ``advanced`` reads it back, by
    this one condition (see ``advance_ctes``)."""
    return f"(qp.aggregate IN ('DISTINCT_DAYS', 'STREAK_DAYS') AND {day} = ANY(qp.days))"


def advance_ctes(event_id: str = "$2::bigint") -> str:
    """Two common table expressions: ``upserted``, the upsert of the matched quests' progress
    rows, and ``advanced``, every matched quest's row as the event leaves it: the rows the
    upsert changed, and those of DISTINCT_DAYS and STREAK_DAYS quests that already counted the
    event's day, which the event does not change and the upsert leaves unwritten (half the
    rows of a busy member's events, on a program with as many day-based quests as others).
    $1 member, $3 now, $4-$12 the advances (``advance_arguments``); ``event_id``: the SQL of
    the event's id (by default the parameter $2), kept on a row the event completes."""
    return f"""upserted AS (
    INSERT INTO quest_progress AS qp (
        member_id, quest_id, period_start, period_end, aggregate, progress, target, days,
        last_day, status, completed_by_event_id, completed_at, updated_at, rewards, claimed_at)
    SELECT $1::bigint, e.quest_id, e.period_start, e.period_end, e.aggregate,
           e.amount, e.target, ARRAY[e.day], e.day,
           CASE WHEN e.amount < e.target THEN 'IN_PROGRESS'
                WHEN e.auto THEN 'CLAIMED' ELSE 'COMPLETED' END,
           CASE WHEN e.amount >= e.target THEN {event_id} END,
           CASE WHEN e.amount >= e.target THEN $3::timestamptz END,
           $3::timestamptz,
           CASE WHEN e.amount >= e.target THEN e.rewards::jsonb END,
           CASE WHEN e.amount >= e.target AND e.auto THEN $3::timestamptz END
    FROM unnest($4::bigint[], $5::timestamptz[],
                $6::timestamptz[], $7::text[],
                $8::bigint[], $9::numeric[],
                $10::date[], $11::text[], $12::boolean[])
         AS e(quest_id, period_start, period_end, aggregate, target, amount, day, rewards, auto)
    ON CONFLICT (member_id, quest_id, period_start) DO UPDATE SET
        progress = {_NEXT},
        days = CASE WHEN EXCLUDED.last_day = ANY(qp.days) THEN qp.days
                    ELSE qp.days || EXCLUDED.last_day END,
        last_day = greatest(qp.last_day, EXCLUDED.last_day),
        status = CASE WHEN NOT {_COMPLETES} THEN 'IN_PROGRESS'
                      WHEN {_ROW_AUTO} THEN 'CLAIMED' ELSE 'COMPLETED' END,
        completed_by_event_id = CASE WHEN {_COMPLETES} THEN {event_id} END,
        completed_at = CASE WHEN {_COMPLETES} THEN $3::timestamptz END,
        updated_at = $3::timestamptz,
        rewards = CASE WHEN {_COMPLETES}
                       THEN (SELECT x.rewards::jsonb {_QUEST_OF_ROW}
                             WHERE x.quest_id = qp.quest_id) END,
        claimed_at = CASE WHEN {_COMPLETES} AND {_ROW_AUTO} THEN $3::timestamptz END
    WHERE qp.status = 'IN_PROGRESS' AND NOT {_day_already_counted("EXCLUDED.last_day")}
    RETURNING id, quest_id, progress, target, status, period_start, period_end
), advanced AS (
    SELECT * FROM upserted
    UNION ALL
    SELECT qp.id, qp.quest_id, qp.progress, qp.target, qp.status, qp.period_start,
           qp.period_end
    FROM unnest($4::bigint[], $5::timestamptz[], $10::date[]) AS e(quest_id, period_start, day)
    JOIN quest_progress qp ON qp.member_id = $1::bigint AND qp.quest_id = e.quest_id
                          AND qp.period_start = e.period_start
    WHERE qp.status = 'IN_PROGRESS' AND {_day_already_counted("e.day")}
)"""


ADVANCE_SQL = f"WITH {advance_ctes()} SELECT * FROM advanced"


@dataclass(frozen=True)
class Advance:
    """One matched quest, and what the event contributes to it."""

    quest: QuestDef
    period: Period
    amount: Decimal  # SUM: the property's value; other aggregates: 1


@dataclass(frozen=True)
class ProgressUpdate:
    progress_id: int
    quest: QuestDef
    progress: Decimal
    target: int
    status: str
    period_start: datetime
    period_end: datetime | None

    @property
    def completed_now(self) -> bool:
        # Only rows still in progress are updated, so a completed row came back completed
        # by this very statement.
        return self.status != "IN_PROGRESS"


async def advance_all(
    session: AsyncSession,
    *,
    member_id: int,
    advances: Sequence[Advance],
    event_id: int,
    now: datetime,
) -> list[ProgressUpdate]:
    """Apply one event to every matched quest in one round trip. Quests whose period had
    already completed are left out of the result."""
    if not advances:
        return []
    rows = await rawsql.fetch(
        session, ADVANCE_SQL, member_id, event_id, now, *advance_arguments(advances)
    )
    return progress_updates(rows, advances)


def advance_arguments(advances: Sequence[Advance]) -> tuple[list[Any], ...]:
    """``ADVANCE_SQL``'s arrays ($4 to $12), one element per advance."""
    return (
        [a.quest.id for a in advances],
        [a.period.start for a in advances],
        [a.period.end for a in advances],
        [a.quest.aggregate for a in advances],
        [a.quest.target for a in advances],
        [a.amount for a in advances],
        [a.period.local_day for a in advances],
        [a.quest.rewards_json for a in advances],
        [a.quest.auto_claim for a in advances],
    )


def progress_updates(rows: Sequence[Any], advances: Sequence[Advance]) -> list[ProgressUpdate]:
    """The rows ``ADVANCE_SQL`` returned, with their quests."""
    by_id = {a.quest.id: a.quest for a in advances}
    return [
        ProgressUpdate(
            progress_id=row["id"],
            quest=by_id[row["quest_id"]],
            progress=row["progress"],
            target=row["target"],
            status=row["status"],
            period_start=row["period_start"],
            period_end=row["period_end"],
        )
        for row in rows
    ]
