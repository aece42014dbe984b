"""Tiers: qualification by xp earned in a rolling window, upgrades the moment the threshold
is crossed, retention at the end of each member's window, and the points multiplier.

A member's *window* for their current tier starts when they reach it (``tier_since``) and
lasts the tier's ``windowDays`` (no window: lifetime). At its end the retention job compares
the xp earned in that window with ``retentionXp``: below it, the member moves down exactly one
tier (never below the base tier, the lowest rank); otherwise a new window starts.

"xp earned" is the net sum of postings on the member's xp account (a reversed xp grant does
not count) over the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Member, Tier, TierChange
from members.validation import validate_key
from server import rawsql, signals
from server.cache import TTLCache
from server.errors import DomainError, ErrorCode, invalid, not_found

MAX_MULTIPLIER = Decimal("100")


@dataclass(frozen=True)
class TierInput:
    key: str
    name: str
    rank: int
    xp_threshold: int
    points_multiplier: float = 1.0
    retention_xp: int | None = None
    window_days: int | None = 365
    benefits: tuple[str, ...] = ()


def _validate(data: TierInput) -> Decimal:
    validate_key(data.key)
    if not data.name.strip() or len(data.name) > 255:
        raise invalid("name must be 1 to 255 characters", "name")
    if data.rank < 0:
        raise invalid("rank cannot be negative", "rank")
    if data.xp_threshold < 0:
        raise invalid("xpThreshold cannot be negative", "xpThreshold")
    if data.retention_xp is not None and data.retention_xp < 0:
        raise invalid("retentionXp cannot be negative", "retentionXp")
    if data.window_days is not None and not 1 <= data.window_days <= 3650:
        raise invalid("windowDays must be between 1 and 3650 (or null: lifetime)", "windowDays")
    multiplier = Decimal(str(data.points_multiplier)).quantize(Decimal("0.001"))
    if not Decimal(0) < multiplier <= MAX_MULTIPLIER:
        raise invalid(
            f"pointsMultiplier must be above 0 and at most {MAX_MULTIPLIER}", "pointsMultiplier"
        )
    return multiplier


async def upsert_tier(session: AsyncSession, data: TierInput) -> Tier:
    multiplier = _validate(data)
    values = {
        "name": data.name.strip(),
        "rank": data.rank,
        "xp_threshold": data.xp_threshold,
        "points_multiplier": multiplier,
        "retention_xp": data.retention_xp,
        "window_days": data.window_days,
        "benefits": list(data.benefits),
        "updated_at": text("now()"),
    }
    clash = await session.scalar(
        select(Tier.key).where(Tier.rank == data.rank, Tier.key != data.key)
    )
    if clash is not None:
        raise DomainError(
            ErrorCode.CONFLICT, f"tier {clash!r} already has rank {data.rank}", "rank"
        )
    try:
        async with session.begin_nested():
            tier_id = await session.scalar(
                insert(Tier)
                .values(key=data.key, **values)
                .on_conflict_do_update(index_elements=[Tier.key], set_=values)
                .returning(Tier.id)
            )
    except IntegrityError as exc:  # a concurrent upsert took the rank first
        raise DomainError(ErrorCode.CONFLICT, f"rank {data.rank} is taken", "rank") from exc
    _tiers_cache.clear()
    return await session.get_one(Tier, tier_id, populate_existing=True)


# Tiers are few and rarely change, but every member read needs them: cache them briefly per
# process. An upsert clears this process's copy; other processes see it within the TTL.
_tiers_cache: TTLCache[str, list[Tier]] = TTLCache(seconds=5.0)


def cached_tiers() -> list[Tier] | None:
    """The tiers if this process read them within the cache's TTL (no session needed)."""
    return _tiers_cache.get("all")


async def list_tiers(session: AsyncSession, *, fresh: bool = False) -> list[Tier]:
    """All tiers, lowest rank first (detached snapshots: read them, do not modify them)."""
    cached = None if fresh else _tiers_cache.get("all")
    if cached is not None:
        return cached
    tiers = list(await session.scalars(select(Tier).order_by(Tier.rank)))
    for tier in tiers:
        session.expunge(tier)
    return _tiers_cache.put("all", tiers)


async def require_tier(session: AsyncSession, key: str, field: str = "tier") -> Tier:
    tier = await session.scalar(select(Tier).where(Tier.key == key))
    if tier is None:
        raise not_found(f"no tier {key!r}", field)
    return tier


def apply_multiplier(points: int, multiplier: Decimal | float) -> int:
    """Points after a multiplier, rounded DOWN to a whole point (a member never receives a
    fraction, and rounding never creates value): 15 × 1.25 = 18.75 → 18."""
    exact = Decimal(points) * Decimal(str(multiplier))
    return int(exact.to_integral_value(rounding=ROUND_FLOOR))


def xp_earned_sql(member: str, since: str) -> str:
    """The xp a member earned since a moment (``since`` NULL: ever), as SQL over the given
    expressions (parameters or columns); shared by ``xp_earned`` and ``members.view``."""
    return f"""
    SELECT coalesce(sum(p.amount), 0)
    FROM accounts a JOIN postings p ON p.account_id = a.id
    WHERE a.member_id = {member} AND a.currency = 'xp' AND a.kind = 'available'
      AND ({since} IS NULL OR p.created_at >= {since})
    """


XP_EARNED_RAW = xp_earned_sql("$1", "$2::timestamptz")


async def xp_earned(session: rawsql.Queryable, member_id: int, since: datetime | None) -> int:
    return int(await rawsql.fetchval(session, XP_EARNED_RAW, member_id, since) or 0)


@dataclass(frozen=True)
class TierProgress:
    current: Tier | None
    next: Tier | None
    xp_in_window: int
    xp_needed: int  # 0 at the top tier


def progress_window(
    tier_id: int | None, tiers: list[Tier]
) -> tuple[Tier | None, Tier | None, int | None]:
    """The member's current tier, the tier above it (``tiers`` sorted by rank) and the window
    in days whose xp counts towards it (None: lifetime)."""
    current = next((t for t in tiers if t.id == tier_id), None)
    target = next((t for t in tiers if current is None or t.rank > current.rank), None)
    window = target.window_days if target else (current.window_days if current else None)
    return current, target, window


def progress_of(current: Tier | None, target: Tier | None, earned: int) -> TierProgress:
    needed = max(0, target.xp_threshold - earned) if target else 0
    return TierProgress(current, target, earned, needed)


# The highest tier whose threshold the member's xp, earned within that tier's own window,
# reaches, when it ranks above the member's current tier: one statement whatever the number
# of tiers, and nothing returned in the common case of an xp credit that changes no tier.
BEST_TIER_SQL = text(
    """
    SELECT best.id FROM (
        SELECT t.id, t.rank FROM tiers t
        WHERE t.xp_threshold <= (
            SELECT coalesce(sum(p.amount), 0)
            FROM accounts a JOIN postings p ON p.account_id = a.id
            WHERE a.member_id = :member_id AND a.currency = 'xp' AND a.kind = 'available'
              AND (t.window_days IS NULL
                   OR p.created_at >= CAST(:now AS timestamptz)
                                      - make_interval(days => t.window_days))
        )
        ORDER BY t.rank DESC LIMIT 1
    ) best
    WHERE NOT EXISTS (
        SELECT 1 FROM members m JOIN tiers cur ON cur.id = m.tier_id
        WHERE m.id = :member_id AND cur.rank >= best.rank
    )
    """
)


async def qualify(session: AsyncSession, member_id: int, now: datetime) -> Tier | None:
    """Upgrade the member if the xp earned in a tier's window reaches its threshold.

    Called in the same transaction as every xp credit, so the upgrade happens on the posting
    that crosses the threshold. Never downgrades (that is the retention job's decision).
    Returns the new tier, or None when unchanged.
    """
    best_id = await session.scalar(BEST_TIER_SQL, {"member_id": member_id, "now": now})
    if best_id is None:
        return None
    # an upgrade is due: decide again under the member's row lock (a concurrent credit may
    # have upgraded already)
    member = await session.scalar(select(Member).where(Member.id == member_id).with_for_update())
    if member is None:
        raise not_found("no such member")
    if member.tier_id == best_id:
        return None
    tiers = {t.id: t for t in await list_tiers(session, fresh=True)}
    current, best = tiers.get(member.tier_id or -1), tiers[best_id]
    if current is not None and current.rank >= best.rank:
        return None
    await _change_tier(session, member, current, best, "upgrade", now)
    return best


async def _change_tier(
    session: AsyncSession,
    member: Member,
    old: Tier | None,
    new: Tier | None,
    reason: str,
    now: datetime,
) -> None:
    since = now - timedelta(days=new.window_days) if new and new.window_days else None
    earned = await xp_earned(session, member.id, since)
    member.tier_id = new.id if new else None
    member.tier_since = now
    session.add(
        TierChange(
            member_id=member.id,
            from_tier_id=old.id if old else None,
            to_tier_id=new.id if new else None,
            reason=reason,
            xp_in_window=earned,
            created_at=now,
        )
    )
    await session.flush()
    signals.emit(
        session,
        "tier.changed",
        member_id=member.id,
        from_tier=old.key if old else None,
        to_tier=new.key if new else None,
        reason=reason,
        at=now,
    )


async def tier_history(session: AsyncSession, member_id: int, limit: int = 100) -> list[TierChange]:
    rows = await session.scalars(
        select(TierChange)
        .where(TierChange.member_id == member_id)
        .order_by(TierChange.id.desc())
        .limit(limit)
    )
    return list(rows)
