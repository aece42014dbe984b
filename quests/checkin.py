"""Daily check-in streaks.

One check-in per member per local day (the member's timezone, else the program's). The
streak grows by one when yesterday had a check-in and restarts at 1 after a missed day;
``longest`` keeps the record. Rewards escalate by streak day (``check_in_rewards``: a row for
a given day, e.g. day 7, else the ``day = 0`` default). Each check-in is also recorded as a
``check_in`` event, so quests can count check-ins too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Member
from members.program import get_program
from members.service import require_active
from quests.events import awards_from_json, awards_to_json, record_event
from quests.models import CheckIn, CheckInReward, Streak
from quests.rewards import KnownTier, grant_rewards
from server.awards import Award
from server.cache import TTLCache
from server.errors import DomainError, ErrorCode, invalid

CHECK_IN_EVENT = "check_in"
MAX_REWARD_DAY = 366


@dataclass(frozen=True)
class CheckInResult:
    streak: Streak
    awards: list[Award]


async def check_in(
    session: AsyncSession, member: Member, now: datetime, idempotency_key: str | None = None
) -> CheckInResult:
    require_active(member)
    program = await get_program(session)
    today = now.astimezone(ZoneInfo(member.timezone or program.timezone)).date()
    # Lock (or create) the member's streak row: check-ins of one member go one at a time.
    await session.execute(insert(Streak).values(member_id=member.id).on_conflict_do_nothing())
    streak = await session.scalar(
        select(Streak).where(Streak.member_id == member.id).with_for_update()
    )
    assert streak is not None
    if streak.last_check_in_date == today:
        done = await session.scalar(
            select(CheckIn).where(CheckIn.member_id == member.id, CheckIn.local_date == today)
        )
        if done is not None and idempotency_key and done.idempotency_key == idempotency_key:
            return CheckInResult(streak, awards_from_json(done.awards))  # a retried request
        raise DomainError(ErrorCode.ALREADY_DONE, "already checked in today")
    follows = streak.last_check_in_date == today - timedelta(days=1)
    streak.current = streak.current + 1 if follows else 1
    streak.longest = max(streak.longest, streak.current)
    streak.last_check_in_date = today
    streak.last_check_in_at = now
    row = CheckIn(
        member_id=member.id,
        local_date=today,
        streak_day=streak.current,
        idempotency_key=idempotency_key,
    )
    session.add(row)
    await session.flush()
    awards = await grant_rewards(
        session,
        member_id=member.id,
        rewards=await _rewards_for_day(session, streak.current),
        source_key=f"check_in:{row.id}",
        event_type=CHECK_IN_EVENT,
        earned_at=now,
        program=program,
        now=now,
        memo=f"Check-in, day {streak.current}",
        known_tier=KnownTier(member.tier_id),  # the member row was read in this transaction
    )
    outcome = await record_event(
        session,
        external_id=member.external_id,
        event_type=CHECK_IN_EVENT,
        properties={"streak": streak.current},
        occurred_at=now,
        idempotency_key=f"check_in:{today.isoformat()}",
        now=now,
    )
    awards += outcome.awarded
    row.awards = awards_to_json(awards)
    await session.flush()
    return CheckInResult(streak, awards)


# The reward table is read by every check-in and changes rarely: each process keeps it for a
# few seconds (a change made through another process shows within that) and forgets it when
# it configures the table itself.
_reward_table: TTLCache[str, dict[int, tuple[int, int]]] = TTLCache(seconds=5.0)


async def _rewards_for_day(session: AsyncSession, day: int) -> list[dict[str, object]]:
    table = _reward_table.get("all")
    if table is None:
        rows = await session.scalars(select(CheckInReward))
        table = _reward_table.put("all", {r.day: (r.points, r.xp) for r in rows})
    points, xp = table.get(day) or table.get(0) or (0, 0)
    rewards: list[dict[str, object]] = []
    if points > 0:
        rewards.append({"kind": "POINTS", "amount": points, "currency": "points"})
    if xp > 0:
        rewards.append({"kind": "XP", "amount": xp, "currency": "xp"})
    return rewards


@dataclass(frozen=True)
class DayReward:
    day: int
    points: int = 0
    xp: int = 0


async def configure_rewards(session: AsyncSession, rewards: list[DayReward]) -> list[DayReward]:
    """Replace the check-in reward table (``day = 0`` is the every-day default)."""
    seen: set[int] = set()
    for reward in rewards:
        if not 0 <= reward.day <= MAX_REWARD_DAY:
            raise invalid(f"day must be between 0 and {MAX_REWARD_DAY}", "rewards.day")
        if reward.day in seen:
            raise invalid(f"day {reward.day} appears twice", "rewards.day")
        if not (0 <= reward.points <= 1_000_000_000 and 0 <= reward.xp <= 1_000_000_000):
            raise invalid("points and xp must be between 0 and 1000000000", "rewards")
        seen.add(reward.day)
    _reward_table.clear()
    await session.execute(delete(CheckInReward))
    for reward in rewards:
        session.add(CheckInReward(day=reward.day, points=reward.points, xp=reward.xp))
    await session.flush()
    return sorted(rewards, key=lambda r: r.day)


async def streak_of(
    session: AsyncSession, member_id: int, today: date
) -> tuple[int, int, datetime | None]:
    """(current, longest, last check-in): the current streak is 0 once a day was missed."""
    streak = await session.get(Streak, member_id)
    if streak is None:
        return 0, 0, None
    alive = (
        streak.last_check_in_date is not None
        and streak.last_check_in_date >= today - timedelta(days=1)
    )
    return (streak.current if alive else 0), streak.longest, streak.last_check_in_at
