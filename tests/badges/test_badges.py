"""award_badge through the service: leveled upgrades, never a downgrade, never two rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from badges.models import MemberBadge
from badges.service import BadgeInput, award_badge, upsert_badge
from server.awards import Award, AwardKind
from server.errors import DomainError
from server.runtime import Runtime
from tests.badges.helpers import all_at_once
from tests.members.helpers import make_member

NOW = datetime(2030, 5, 1, 12, tzinfo=UTC)


async def make_badge(runtime: Runtime, key: str, levels: int = 1, secret: bool = False) -> None:
    async with runtime.transaction() as session:
        await upsert_badge(
            session, BadgeInput(key=key, name=key.title(), levels=levels, secret=secret)
        )


async def award(
    runtime: Runtime, member_id: int, key: str, level: int = 1, now: datetime = NOW
) -> Award | None:
    async with runtime.transaction() as session:
        return await award_badge(session, member_id, key, level, now=now)


async def rows_of(runtime: Runtime, member_id: int) -> list[tuple[int, datetime, datetime]]:
    async with runtime.sessionmaker() as session:
        found = await session.execute(
            select(MemberBadge.level, MemberBadge.awarded_at, MemberBadge.first_awarded_at).where(
                MemberBadge.member_id == member_id
            )
        )
        return [(level, awarded, first) for level, awarded, first in found]


async def test_leveled_badge_upgrades_and_never_downgrades(runtime: Runtime) -> None:
    await make_badge(runtime, "coffee-lover", levels=3)
    member_id = await make_member(runtime, "ana")
    first = await award(runtime, member_id, "coffee-lover", 1)
    assert first == Award(AwardKind.BADGE, amount=1, key="coffee-lover")
    assert await award(runtime, member_id, "coffee-lover", 1) is None  # already held
    later = NOW + timedelta(days=3)
    gold = await award(runtime, member_id, "coffee-lover", 3, later)
    assert gold == Award(AwardKind.BADGE, amount=3, key="coffee-lover")
    assert await award(runtime, member_id, "coffee-lover", 2, later + timedelta(days=1)) is None
    # one row, at gold, reached at `later`, first earned at NOW
    assert await rows_of(runtime, member_id) == [(3, later, NOW)]


async def test_award_refuses_unknown_badges_and_levels(runtime: Runtime) -> None:
    await make_badge(runtime, "early-bird", levels=2)
    member_id = await make_member(runtime, "ben")
    for key, level, code in (
        ("nope", 1, "NOT_FOUND"),
        ("early-bird", 0, "INVALID_INPUT"),
        ("early-bird", 3, "INVALID_INPUT"),
    ):
        with pytest.raises(DomainError) as caught:
            await award(runtime, member_id, key, level)
        assert caught.value.code == code
    assert await rows_of(runtime, member_id) == []


async def test_concurrent_awards_leave_one_row_at_the_highest_level(runtime: Runtime) -> None:
    await make_badge(runtime, "marathon", levels=5)
    member_id = await make_member(runtime, "cleo")
    levels = [1, 5, 2, 4, 3] * 3

    def op(level: int):
        return lambda session: award_badge(session, member_id, "marathon", level, now=NOW)

    results = await all_at_once(runtime, [op(level) for level in levels])
    assert all(r is None or isinstance(r, Award) for r in results)
    gained = [r.amount for r in results if r is not None]
    assert 5 in gained and gained.count(5) == 1  # level 5 was gained exactly once
    assert [row[0] for row in await rows_of(runtime, member_id)] == [5]


async def test_levels_cannot_drop_below_a_held_level(runtime: Runtime) -> None:
    await make_badge(runtime, "explorer", levels=3)
    member_id = await make_member(runtime, "dan")
    await award(runtime, member_id, "explorer", 3)
    with pytest.raises(DomainError) as caught:
        async with runtime.transaction() as session:
            await upsert_badge(session, BadgeInput(key="explorer", name="Explorer", levels=2))
    assert (caught.value.code, caught.value.field) == ("CONFLICT", "levels")
    await make_badge(runtime, "explorer", levels=4)  # raising is fine
    async with runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(MemberBadge)) == 1
