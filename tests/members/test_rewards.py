"""Welcome and birthday points: once only, even when the job runs twice or concurrently."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from ledger.models import LedgerTransaction
from ledger.queries import balances
from members.program import configure_program
from members.service import register_member
from members.tasks import run_birthday_rewards
from server.runtime import Runtime
from tests.members.helpers import make_member


async def configure(runtime: Runtime, **changes: object) -> None:
    async with runtime.transaction() as session:
        await configure_program(session, changes)


async def points_of(runtime: Runtime, member_id: int) -> int:
    async with runtime.sessionmaker() as session:
        return (await balances(session, member_id)).available


async def count_kind(runtime: Runtime, kind: str) -> int:
    async with runtime.sessionmaker() as session:
        return int(
            await session.scalar(select(func.count()).where(LedgerTransaction.kind == kind)) or 0
        )


async def test_welcome_points_once(runtime: Runtime) -> None:
    await configure(runtime, welcome_points=100)
    member_id = await make_member(runtime, "welcome-me")
    await make_member(runtime, "welcome-me")  # registering again: the same member, no points
    results = await asyncio.gather(*(make_member(runtime, "racer") for _ in range(5)))
    assert len(set(results)) == 1
    assert await points_of(runtime, member_id) == 100
    assert await points_of(runtime, results[0]) == 100
    assert await count_kind(runtime, "welcome") == 2


async def test_no_welcome_points_by_default(runtime: Runtime) -> None:
    member_id = await make_member(runtime, "plain")
    assert await points_of(runtime, member_id) == 0


async def _born(runtime: Runtime, external_id: str, birthday: date, tz: str | None = None) -> int:
    async with runtime.transaction() as session:
        registration = await register_member(
            session,
            external_id=external_id,
            birthday=birthday,
            timezone=tz,
            today=date(2030, 1, 1),
        )
        return registration.member.id


async def test_birthday_points_once_per_year_in_member_timezone(runtime: Runtime) -> None:
    await configure(runtime, birthday_points=50)
    tokyo = await _born(runtime, "tokyo", date(1990, 11, 24), "Asia/Tokyo")
    utc = await _born(runtime, "utc", date(1990, 11, 24))
    other = await _born(runtime, "other", date(1990, 5, 1))
    # 2026-11-23 20:00 UTC is already 24 November in Tokyo, still the 23rd in UTC.
    evening = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    runs = await asyncio.gather(
        run_birthday_rewards(runtime, evening), run_birthday_rewards(runtime, evening)
    )
    assert sum(runs) == 1
    assert await run_birthday_rewards(runtime, evening) == 0  # a rerun grants nothing
    assert [await points_of(runtime, m) for m in (tokyo, utc, other)] == [50, 0, 0]
    next_day = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert await run_birthday_rewards(runtime, next_day) == 1  # now UTC's turn
    assert await points_of(runtime, utc) == 50
    assert await points_of(runtime, tokyo) == 50  # still once this year
    next_year = datetime(2027, 11, 24, 12, 0, tzinfo=UTC)
    assert await run_birthday_rewards(runtime, next_year) == 2


async def test_leap_day_birthdays(runtime: Runtime) -> None:
    await configure(runtime, birthday_points=10)
    leap = await _born(runtime, "leap", date(2000, 2, 29))
    assert await run_birthday_rewards(runtime, datetime(2027, 2, 28, 12, tzinfo=UTC)) == 1
    assert await run_birthday_rewards(runtime, datetime(2027, 3, 1, 12, tzinfo=UTC)) == 0
    assert await run_birthday_rewards(runtime, datetime(2028, 2, 28, 12, tzinfo=UTC)) == 0
    assert await run_birthday_rewards(runtime, datetime(2028, 2, 29, 12, tzinfo=UTC)) == 1
    assert await points_of(runtime, leap) == 20


async def test_no_birthday_points_when_not_configured(runtime: Runtime) -> None:
    await _born(runtime, "unset", date(1990, 11, 23))
    assert await run_birthday_rewards(runtime, datetime(2026, 11, 23, 12, tzinfo=UTC)) == 0
