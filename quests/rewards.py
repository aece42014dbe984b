"""Granting a completed quest's rewards: points (through the multipliers), xp (then the tier
check), badges and titles. Every grant is keyed by the progress row and the reward's
position, so granting twice (a retry, a concurrent claim) gives nothing twice.

Points multipliers: ``floor(base × tier multiplier × campaign multipliers)``, rounded down
once at the end (see campaigns.service for how campaigns stack). Admin grants get none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from badges.service import award_badge, grant_title
from campaigns.service import cached_campaign_multiplier, campaign_multiplier
from ledger import service as ledger
from members.models import Member, Tier
from members.program import Program
from members.rewards import after_xp_credit
from members.tiers import apply_multiplier, cached_tiers, list_tiers
from server.awards import Award, points
from server.errors import DomainError

log = structlog.get_logger("questline.quests.rewards")


@dataclass
class KnownTier:
    """The member's tier as the caller's transaction last knew it (``tier_id`` None: no
    tier). With it, each points reward finds its tier multiplier in the process's tier cache
    instead of reading the member's tier again; an xp reward that upgrades the member moves
    it along, so a later reward of the same event gets the new tier's multiplier."""

    tier_id: int | None


async def points_multiplier(
    session: AsyncSession,
    member_id: int,
    event_type: str | None,
    at: datetime,
    known: KnownTier | None = None,
) -> Decimal:
    """The member's tier multiplier times every active campaign that applies."""
    tier = await _tier_of(session, member_id, known)
    tier_multiplier = Decimal(tier[0]) if tier else Decimal(1)
    campaigns = await campaign_multiplier(
        session, event_type=event_type, tier_rank=tier[1] if tier else None, at=at
    )
    return tier_multiplier * campaigns


def cached_points_multiplier(
    tier_id: int | None, event_type: str | None, at: datetime
) -> Decimal | None:
    """:func:`points_multiplier` for a member of tier ``tier_id``, from this process's caches
    alone (no session): None when they do not hold what it needs."""
    tier = None
    if tier_id is not None:
        tier = next((t for t in cached_tiers() or [] if t.id == tier_id), None)
        if tier is None:
            return None
    campaigns = cached_campaign_multiplier(
        event_type=event_type, tier_rank=tier.rank if tier else None, at=at
    )
    if campaigns is None:
        return None
    return (tier.points_multiplier if tier else Decimal(1)) * campaigns


async def _tier_of(
    session: AsyncSession, member_id: int, known: KnownTier | None
) -> tuple[Decimal, int] | None:
    """(points multiplier, rank) of the member's tier, None without one."""
    if known is not None:
        if known.tier_id is None:
            return None
        cached = next((t for t in await list_tiers(session) if t.id == known.tier_id), None)
        if cached is not None:
            return cached.points_multiplier, cached.rank
    row = (
        await session.execute(
            select(Tier.points_multiplier, Tier.rank)
            .join(Member, Member.tier_id == Tier.id)
            .where(Member.id == member_id)
        )
    ).one_or_none()
    return (row.points_multiplier, row.rank) if row else None


def quest_source_key(progress_id: int) -> str:
    """A completed quest's rewards: their ledger reference, and with each reward's position
    their idempotency keys (``quests.event_at_once`` builds the same in SQL)."""
    return f"quest:{progress_id}"


def quest_memo(quest_name: str) -> str:
    """The memo of a completed quest's reward transactions."""
    return f"Quest: {quest_name}"


async def grant_rewards(
    session: AsyncSession,
    *,
    member_id: int,
    rewards: list[dict[str, Any]],
    source_key: str,
    event_type: str | None,
    earned_at: datetime,
    program: Program,
    now: datetime,
    memo: str,
    known_tier: KnownTier | None = None,
) -> list[Award]:
    """Grant ``rewards`` once (idempotency keys ``<source_key>:<index>``)."""
    awards: list[Award] = []
    multiplier: Decimal | None = None
    for index, reward in enumerate(rewards):
        key = f"{source_key}:{index}"
        kind = reward["kind"]
        if kind == "POINTS":
            if multiplier is None:
                multiplier = await points_multiplier(
                    session, member_id, event_type, earned_at, known_tier
                )
            amount = apply_multiplier(reward["amount"], multiplier)
            if amount <= 0:
                continue
            await ledger.grant(
                session,
                member_id,
                amount,
                idempotency_key=key,
                currency=reward["currency"],
                memo=memo,
                reference=source_key,
                kind="reward",
                lifetime_days=program.points_lifetime_days,
            )
            awards.append(points(amount, reward["currency"], reward.get("key")))
        elif kind == "XP":
            await ledger.grant(
                session,
                member_id,
                reward["amount"],
                idempotency_key=key,
                currency="xp",
                memo=memo,
                reference=source_key,
                kind="reward",
            )
            upgraded = await after_xp_credit(session, member_id, now)
            if upgraded is not None and known_tier is not None:
                known_tier.tier_id = upgraded.id
            awards.append(points(reward["amount"], "xp"))
        else:
            award = await _badge_or_title(session, member_id, reward, now)
            if award is not None:
                awards.append(award)
    return awards


async def _badge_or_title(
    session: AsyncSession, member_id: int, reward: dict[str, Any], now: datetime
) -> Award | None:
    """A badge or title that cannot be given (a title's seats all taken, a badge since
    removed) is skipped, not a failure of the whole event: the savepoint undoes only it."""
    try:
        async with session.begin_nested():
            if reward["kind"] == "BADGE":
                return await award_badge(
                    session, member_id, reward["key"], reward["amount"], now=now
                )
            return await grant_title(session, member_id, reward["key"], now=now)
    except DomainError as error:
        log.info("reward skipped", reward=reward, member=member_id, reason=error.code.value)
        return None
