"""Referral rewards: when a referred member first performs the program's qualifying event,
the referee gets ``refereeReward`` and the referrer ``referrerReward``, once ever per referee.

How it holds
- Once per referee: a ``referral_rewards`` row is claimed with ``INSERT .. ON CONFLICT
  (referee_id) DO NOTHING`` before anything is granted; a replayed or concurrent qualifying
  event finds the claim taken and grants nothing (the same event replayed gets its stored
  outcome back). The ledger keys ``referral:<referee>:referee`` / ``:referrer`` guard the
  grants a second time.
- Monthly cap: the referrer's rewards stop at ``maxReferralRewardsPerMonth`` in the month of
  the qualifying event in the program's timezone. The count is a per-referrer, per-month
  counter incremented by ``INSERT .. ON CONFLICT DO UPDATE .. WHERE rewarded < cap``: one
  statement that locks only that referrer's counter row, so concurrent referees of one
  referrer can never push it past the cap. A capped referrer gets nothing (recorded as
  ``capped``); the referee still gets their reward.
- Only active members earn: a suspended referee triggers nothing (a later qualifying event,
  once reactivated, still can); a suspended referrer's share is recorded as ``suspended``.
- Cycles: links are made only when a new member registers, so a chain cannot cycle; a
  corrupted chain that leads back to the referee is still refused (nobody is rewarded), which
  also keeps the ledger's lock order (referee, then referrer) free of deadlocks.
- Rewards are available points at once (no pending window), expiring after the program's
  ``pointsLifetimeDays``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ledger import service as ledger
from ledger.errors import LedgerError
from members.models import Member
from members.program import Program, get_program
from referrals.models import ReferralReward
from server.awards import Award, points
from server.cache import TTLCache
from server.errors import DomainError
from server.runtime import AfterCommit

log = structlog.get_logger("questline.referrals")

AWARD_KEY = "referral"
MAX_CHAIN_DEPTH = 100

REWARDED, CAPPED, SUSPENDED, NO_REWARD = "rewarded", "capped", "suspended", "no_reward"


@dataclass(frozen=True)
class ReferralOutcome:
    referee_id: int
    referrer_id: int
    referee_award: Award | None
    referrer_award: Award | None
    referrer_outcome: str  # rewarded | capped | suspended | no_reward
    replayed: bool = False  # the same event had already been rewarded: nothing moved now


async def on_member_event(
    session: AsyncSession, member_id: int, event_type: str, *, now: datetime, event_id: int
) -> list[Award]:
    """Called by the event pipeline, in its transaction, for every recorded event. Returns
    what the event's member (the referee) received: ``[]`` unless this event is the one that
    qualifies the referral. Costs no query unless ``event_type`` is the qualifying event."""
    program = await get_program(session)
    if program.referral_qualifying_event is None or event_type != program.referral_qualifying_event:
        return []
    settled_by = _settled.get(member_id)
    if settled_by is not None and settled_by != event_id:
        return []
    outcome = await reward_referral(session, member_id, now=now, event_id=event_id, program=program)
    if outcome is None or outcome.referee_award is None:
        return []
    return [outcome.referee_award]


async def reward_referral(
    session: AsyncSession, referee_id: int, *, now: datetime, event_id: int, program: Program
) -> ReferralOutcome | None:
    """Reward the referral of ``referee_id`` if it is due; None when nothing is (not
    referred, not active, already rewarded for another event, or a cycle)."""
    referee = (
        await session.execute(
            select(Member.status, Member.referred_by_id).where(Member.id == referee_id)
        )
    ).one_or_none()
    if referee is None or referee.status != "active":
        return None
    if referee.referred_by_id is None:
        _remember_settled(session, referee_id, NOT_REFERRED)
        return None
    referrer_id: int = referee.referred_by_id
    existing = await _claim_of(session, referee_id)
    if existing is not None:
        _remember_settled(session, referee_id, existing.event_id)
        return _stored(existing) if existing.event_id == event_id else None
    if await _chain_reaches(session, referrer_id, referee_id):
        log.warning("referral cycle refused", referee_id=referee_id, referrer_id=referrer_id)
        return None
    month = local_month(now, program.timezone)
    claim_id = await session.scalar(
        insert(ReferralReward)
        .values(
            referee_id=referee_id,
            referrer_id=referrer_id,
            event_id=event_id,
            referee_amount=max(program.referee_reward, 0),
            referrer_amount=0,
            referrer_outcome=NO_REWARD,
            month=month,
            rewarded_at=now,
        )
        .on_conflict_do_nothing(index_elements=[ReferralReward.referee_id])
        .returning(ReferralReward.id)
    )
    if claim_id is None:  # a concurrent qualifying event claimed it first
        existing = await _claim_of(session, referee_id)
        if existing is not None and existing.event_id == event_id:
            return _stored(existing)
        return None
    referrer_outcome = await _referrer_outcome(session, referrer_id, month, program)
    referee_award = referrer_award = None
    changes: dict[str, object] = {"referrer_outcome": referrer_outcome}
    metadata = {"referee": referee_id, "referrer": referrer_id, "event": event_id}
    if program.referee_reward > 0:
        posted = await _grant(
            session, referee_id, program.referee_reward, f"referral:{referee_id}:referee",
            "Welcome reward for joining through a friend", metadata, program,
        )  # fmt: skip
        changes["referee_transaction_id"] = posted
        referee_award = points(program.referee_reward, key=AWARD_KEY)
    if referrer_outcome == REWARDED:
        posted = await _grant(
            session, referrer_id, program.referrer_reward, f"referral:{referee_id}:referrer",
            "Reward for referring a friend", metadata, program,
        )  # fmt: skip
        changes["referrer_transaction_id"] = posted
        changes["referrer_amount"] = program.referrer_reward
        referrer_award = points(program.referrer_reward, key=AWARD_KEY)
    await session.execute(
        update(ReferralReward).where(ReferralReward.id == claim_id).values(**changes)
    )
    _remember_settled(session, referee_id, event_id)
    return ReferralOutcome(referee_id, referrer_id, referee_award, referrer_award, referrer_outcome)


# Members whose referral is settled for good (never referred: a link is only made when a
# member registers; or already rewarded), with the id of the event that was rewarded
# (NOT_REFERRED: none). A purchase is usually the qualifying event, so this spares the
# look-ups on every purchase after the first. Filled only once the transaction committed.
NOT_REFERRED = 0
_settled: TTLCache[int, int] = TTLCache(seconds=3600, max_entries=100_000)


def _remember_settled(session: AsyncSession, member_id: int, event_id: int) -> None:
    hooks: list[AfterCommit] | None = session.info.get("after_commit")
    if hooks is None:  # not a Runtime.transaction(): do not cache what might roll back
        return

    async def remember() -> None:
        _settled.put(member_id, event_id)

    hooks.append(remember)


def local_month(now: datetime, timezone: str) -> date:
    """The first day of ``now``'s month in ``timezone``."""
    return now.astimezone(ZoneInfo(timezone)).date().replace(day=1)


async def _claim_of(session: AsyncSession, referee_id: int) -> ReferralReward | None:
    return await session.scalar(
        select(ReferralReward).where(ReferralReward.referee_id == referee_id)
    )


def _stored(claim: ReferralReward) -> ReferralOutcome:
    """The outcome recorded for a claim, for a replay of the event that made it."""
    return ReferralOutcome(
        claim.referee_id,
        claim.referrer_id,
        points(claim.referee_amount, key=AWARD_KEY) if claim.referee_amount > 0 else None,
        points(claim.referrer_amount, key=AWARD_KEY) if claim.referrer_amount > 0 else None,
        claim.referrer_outcome,
        replayed=True,
    )


# Does the referral chain starting at the referrer lead back to the referee? Depth-bounded,
# so even a corrupted chain that cycles elsewhere terminates.
CHAIN_SQL = text(
    """
    WITH RECURSIVE chain(id, depth) AS (
        SELECT CAST(:referrer AS bigint), 0
      UNION ALL
        SELECT m.referred_by_id, c.depth + 1
        FROM chain c JOIN members m ON m.id = c.id
        WHERE m.referred_by_id IS NOT NULL AND c.depth < :max_depth
    )
    SELECT EXISTS (SELECT 1 FROM chain WHERE id = :referee)
    """
)


async def _chain_reaches(session: AsyncSession, referrer_id: int, referee_id: int) -> bool:
    params = {"referrer": referrer_id, "referee": referee_id, "max_depth": MAX_CHAIN_DEPTH}
    return bool(await session.scalar(CHAIN_SQL, params))


# Count one more referrer reward in the month unless the cap is reached; no row comes back
# when it is. The conditional update locks the counter row, so concurrent referees of the
# same referrer are counted one after the other.
COUNT_SQL = text(
    """
    INSERT INTO referral_monthly_counts AS c (referrer_id, month, rewarded)
    VALUES (:referrer, :month, 1)
    ON CONFLICT (referrer_id, month) DO UPDATE SET rewarded = c.rewarded + 1
    WHERE CAST(:cap AS integer) IS NULL OR c.rewarded < CAST(:cap AS integer)
    RETURNING rewarded
    """
)


async def _referrer_outcome(
    session: AsyncSession, referrer_id: int, month: date, program: Program
) -> str:
    status = await session.scalar(select(Member.status).where(Member.id == referrer_id))
    if status != "active":
        return SUSPENDED
    if program.referrer_reward <= 0:
        return NO_REWARD
    cap = program.max_referral_rewards_per_month
    if cap is not None and cap <= 0:
        return CAPPED
    counted = await session.scalar(COUNT_SQL, {"referrer": referrer_id, "month": month, "cap": cap})
    return REWARDED if counted is not None else CAPPED


async def _grant(
    session: AsyncSession,
    member_id: int,
    amount: int,
    key: str,
    memo: str,
    metadata: dict[str, int],
    program: Program,
) -> int:
    try:
        posted = await ledger.grant(
            session,
            member_id,
            amount,
            idempotency_key=key,
            memo=memo,
            kind="referral",
            metadata=metadata,
            lifetime_days=program.points_lifetime_days,
        )
    except LedgerError as error:
        raise DomainError(error.code, error.message, error.field) from error
    return posted.transaction_id


@dataclass(frozen=True)
class ReferralStats:
    referred: int  # members who registered with this member's code
    qualified: int  # of those, how many performed the qualifying event
    rewarded: int  # qualified referrals that earned this member the referrer reward


async def referral_stats(
    session: AsyncSession, member_ids: Sequence[int]
) -> dict[int, ReferralStats]:
    referred = {
        referrer_id: referees
        for referrer_id, referees in await session.execute(
            select(Member.referred_by_id, func.count())
            .where(Member.referred_by_id.in_(member_ids))
            .group_by(Member.referred_by_id)
        )
    }
    rewards = {
        row.referrer_id: (row.qualified, row.rewarded)
        for row in await session.execute(
            select(
                ReferralReward.referrer_id,
                func.count().label("qualified"),
                func.count().filter(ReferralReward.referrer_outcome == REWARDED).label("rewarded"),
            )
            .where(ReferralReward.referrer_id.in_(member_ids))
            .group_by(ReferralReward.referrer_id)
        )
    }
    return {
        member_id: ReferralStats(referred.get(member_id, 0), *rewards.get(member_id, (0, 0)))
        for member_id in member_ids
    }
