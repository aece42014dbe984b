"""Rewards the program itself gives: welcome points, birthday points, and the tier check that
follows every xp credit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ledger import service as ledger
from ledger.types import BatchGrant
from members.models import Member, Tier
from members.program import Program
from members.tiers import qualify

BIRTHDAY_BATCH = 5_000


async def grant_welcome(session: AsyncSession, member: Member, program: Program) -> None:
    """Welcome points, once per member (the key names the member: a retry replays)."""
    if program.welcome_points <= 0:
        return
    await ledger.grant(
        session,
        member.id,
        program.welcome_points,
        idempotency_key=f"welcome:{member.id}",
        memo="Welcome to the program",
        kind="welcome",
        lifetime_days=program.points_lifetime_days,
    )


async def after_xp_credit(session: AsyncSession, member_id: int, now: datetime) -> Tier | None:
    """Call in the transaction of every xp credit: upgrades the tier the moment the posting
    crosses a threshold. Returns the new tier (None: unchanged)."""
    return await qualify(session, member_id, now)


# Members whose birthday it is today in their own timezone (else the program's), who have
# not had this year's birthday points. A 29 February birthday is celebrated on 28 February
# in years without one.
BIRTHDAYS_SQL = text(
    """
    SELECT m.id, CAST(extract(year FROM l.today) AS int) AS year
    FROM members m
    CROSS JOIN LATERAL (
        SELECT CAST(CAST(:now AS timestamptz) AT TIME ZONE coalesce(m.timezone, :program_tz)
                    AS date) AS today
    ) l
    WHERE m.birthday IS NOT NULL AND m.status = 'active' AND m.id > :after
      AND (
        to_char(m.birthday, 'MM-DD') = to_char(l.today, 'MM-DD')
        OR (to_char(m.birthday, 'MM-DD') = '02-29' AND to_char(l.today, 'MM-DD') = '02-28'
            AND extract(day FROM make_date(CAST(extract(year FROM l.today) AS int), 3, 1)
                                 - 1) = 28)
      )
      AND NOT EXISTS (
        SELECT 1 FROM transactions t
        WHERE t.idempotency_key = 'birthday:' || m.id || ':' || extract(year FROM l.today)
      )
    ORDER BY m.id
    LIMIT :batch
    """
)


@dataclass(frozen=True)
class BirthdayBatch:
    granted: int
    last_member_id: int | None  # continue after this one; None: nothing left


async def birthday_batch(
    session: AsyncSession, now: datetime, program: Program, after: int = 0
) -> BirthdayBatch:
    """Grant one batch of birthday points in one round trip (``post_batch``); idempotent by
    ``birthday:<member>:<year>`` so a rerun, or two runs at once, grant nothing twice."""
    rows = (
        await session.execute(
            BIRTHDAYS_SQL,
            {"now": now, "program_tz": program.timezone, "after": after, "batch": BIRTHDAY_BATCH},
        )
    ).all()
    if not rows:
        return BirthdayBatch(0, None)
    posted = await ledger.post_batch(
        session,
        [
            BatchGrant(
                member_id=row.id,
                amount=program.birthday_points,
                idempotency_key=f"birthday:{row.id}:{row.year}",
                memo="Happy birthday!",
            )
            for row in rows
        ],
        kind="birthday",
        lifetime_days=program.points_lifetime_days,
    )
    return BirthdayBatch(sum(not p.replayed for p in posted), rows[-1].id)
