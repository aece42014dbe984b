"""Quest operations besides recording events: claiming a reward, and what a member sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Member
from members.program import get_program
from members.service import require_active, touch
from quests.definitions import QuestDef, active_quests_by_event_type, require_quest
from quests.models import Quest, QuestProgress
from quests.periods import period_for
from quests.rewards import grant_rewards, quest_memo, quest_source_key
from server.awards import Award
from server.errors import DomainError, ErrorCode


@dataclass(frozen=True)
class Claim:
    progress: QuestProgress
    quest: Quest
    awards: list[Award]


async def claim_reward(
    session: AsyncSession, member: Member, quest_key: str, now: datetime
) -> Claim:
    """Grant the rewards of the member's oldest completed, unclaimed period of the quest.

    The row lock (``FOR UPDATE``) makes two concurrent claims grant once: the second finds
    nothing left to claim (``ALREADY_DONE``)."""
    require_active(member)
    quest = await require_quest(session, quest_key)
    progress = await session.scalar(
        select(QuestProgress)
        .where(
            QuestProgress.member_id == member.id,
            QuestProgress.quest_id == quest.id,
            QuestProgress.status == "COMPLETED",
        )
        .order_by(QuestProgress.period_start)
        .limit(1)
        .with_for_update()
    )
    if progress is None:
        claimed = await session.scalar(
            select(QuestProgress.id).where(
                QuestProgress.member_id == member.id,
                QuestProgress.quest_id == quest.id,
                QuestProgress.status == "CLAIMED",
            )
        )
        if claimed is not None:
            raise DomainError(ErrorCode.ALREADY_DONE, "the reward was already claimed", "questKey")
        raise DomainError(ErrorCode.NOT_ELIGIBLE, "the quest is not completed yet", "questKey")
    progress.status = "CLAIMED"
    progress.claimed_at = now
    awards = await grant_rewards(
        session,
        member_id=member.id,
        rewards=progress.rewards or quest.rewards,
        source_key=quest_source_key(progress.id),
        event_type=quest.event_type,
        earned_at=progress.completed_at or now,
        program=await get_program(session),
        now=now,
        memo=quest_memo(quest.name),
    )
    await touch(session, member.id, now)
    await session.flush()
    return Claim(progress, quest, awards)


@dataclass(frozen=True)
class MemberQuest:
    quest: QuestDef
    progress: QuestProgress | None  # None: nothing done yet in the current period
    period_start: datetime
    period_end: datetime | None


CURRENT_PROGRESS_SQL = text(
    """
    SELECT DISTINCT ON (quest_id) *
    FROM quest_progress
    WHERE member_id = :member_id
      AND (period_end IS NULL OR period_end > :now OR status = 'COMPLETED')
    ORDER BY quest_id, period_start DESC
    """
)


async def member_quests(
    session: AsyncSession, member_id: int, timezone: str, now: datetime
) -> list[MemberQuest]:
    """Every active, open quest with the member's progress in the current period (a
    completed, unclaimed period from before is shown until it is claimed)."""
    index = await active_quests_by_event_type(session)
    quests = sorted(
        (q for quests in index.values() for q in quests if q.open_at(now)), key=lambda q: q.id
    )
    rows = await session.execute(CURRENT_PROGRESS_SQL, {"member_id": member_id, "now": now})
    by_quest = {row.quest_id: QuestProgress(**row._mapping) for row in rows}
    result = []
    for quest in quests:
        period = period_for(quest.cadence, now, timezone)
        row = by_quest.get(quest.id)
        if row is not None and row.status != "COMPLETED" and row.period_start != period.start:
            row = None  # an older period that ended unfinished
        start = row.period_start if row else period.start
        end = row.period_end if row else period.end
        result.append(MemberQuest(quest, row, start, end))
    return result
