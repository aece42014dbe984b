"""Badges: curation (``upsertBadge``), the public list, and awarding (``award_badge``).

Leveled badges (``levels`` > 1, e.g. 1 bronze, 2 silver, 3 gold) are one row per member and
badge whose level only ever goes up: awarding a higher level upgrades it, awarding the same
or a lower level changes nothing. ``award_badge`` does this in one ``INSERT .. ON CONFLICT DO
UPDATE .. WHERE level < new level`` statement, so concurrent awards can neither create two
rows nor downgrade.

Titles live in ``badges.titles``; ``grant_title`` is re-exported here so the quest pipeline
finds every badge-and-title reward in one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from badges.models import Badge, MemberBadge
from badges.titles import grant_title
from badges.validation import validate_description, validate_name
from members.validation import validate_key
from server import signals
from server.awards import Award, AwardKind
from server.cache import TTLCache
from server.errors import DomainError, ErrorCode, invalid, not_found

__all__ = [
    "BadgeInput",
    "award_badge",
    "badges_of_members",
    "grant_title",
    "list_badges",
    "require_badge",
    "upsert_badge",
]

MAX_LEVELS = 100
MAX_URL = 2048


@dataclass(frozen=True)
class BadgeInput:
    key: str
    name: str
    description: str | None = None
    image_url: str | None = None
    levels: int = 1
    secret: bool = False


def _validate(data: BadgeInput) -> None:
    validate_key(data.key)
    validate_name(data.name)
    validate_description(data.description)
    if data.image_url is not None and (
        len(data.image_url) > MAX_URL or not data.image_url.startswith(("https://", "http://"))
    ):
        raise invalid(
            f"imageUrl must be an http(s) URL of at most {MAX_URL} characters", "imageUrl"
        )
    if not 1 <= data.levels <= MAX_LEVELS:
        raise invalid(f"levels must be between 1 and {MAX_LEVELS}", "levels")


async def upsert_badge(session: AsyncSession, data: BadgeInput) -> Badge:
    """Create or update the badge ``data.key``. Lowering ``levels`` below a level some member
    already holds is a ``CONFLICT`` (levels never go down, so they cannot be taken away)."""
    _validate(data)
    values = {
        "name": data.name.strip(),
        "description": data.description,
        "image_url": data.image_url,
        "levels": data.levels,
        "secret": data.secret,
        "updated_at": text("now()"),
    }
    # The upsert locks the badge row; awards read it FOR SHARE, so the check below sees every
    # award that could still use a level being removed.
    badge_id = await session.scalar(
        insert(Badge)
        .values(key=data.key, **values)
        .on_conflict_do_update(index_elements=[Badge.key], set_=values)
        .returning(Badge.id)
    )
    highest = await session.scalar(
        select(func.max(MemberBadge.level)).where(MemberBadge.badge_id == badge_id)
    )
    if highest is not None and highest > data.levels:
        raise DomainError(
            ErrorCode.CONFLICT, f"members already hold level {highest} of this badge", "levels"
        )
    _badges_cache.clear()
    return await session.get_one(Badge, badge_id, populate_existing=True)


# Every app's badge screen reads the list: cache it briefly per process (cleared on upsert
# here; other processes see a change within the TTL).
_badges_cache: TTLCache[str, list[Badge]] = TTLCache(seconds=5.0)


async def list_badges(session: AsyncSession, *, include_secret: bool = False) -> list[Badge]:
    """Badges in key order (detached snapshots: read them, do not modify them)."""
    badges = _badges_cache.get("all")
    if badges is None:
        badges = list(await session.scalars(select(Badge).order_by(Badge.key)))
        for badge in badges:
            session.expunge(badge)
        _badges_cache.put("all", badges)
    return badges if include_secret else [b for b in badges if not b.secret]


async def require_badge(session: AsyncSession, key: str, field: str = "badgeKey") -> Badge:
    badge = await session.scalar(select(Badge).where(Badge.key == key))
    if badge is None:
        raise not_found(f"no badge {key!r}", field)
    return badge


async def award_badge(
    session: AsyncSession, member_id: int, badge_key: str, level: int = 1, *, now: datetime
) -> Award | None:
    """Give the member ``badge_key`` at ``level``, or upgrade it to that level.

    Returns ``Award(BADGE, amount=level, key=badge_key)`` when the member gained the badge or
    a higher level; None when they already held that level or a higher one (never a
    downgrade). ``NOT_FOUND`` for an unknown badge, ``INVALID_INPUT`` for a level outside
    1..levels. The caller owns the transaction.
    """
    badge = await session.scalar(
        select(Badge).where(Badge.key == badge_key).with_for_update(read=True)
    )
    if badge is None:
        raise not_found(f"no badge {badge_key!r}", "badgeKey")
    if not 1 <= level <= badge.levels:
        raise invalid(f"level must be between 1 and {badge.levels} for this badge", "level")
    statement = insert(MemberBadge).values(
        member_id=member_id, badge_id=badge.id, level=level, awarded_at=now, first_awarded_at=now
    )
    gained = await session.scalar(
        statement.on_conflict_do_update(
            index_elements=[MemberBadge.member_id, MemberBadge.badge_id],
            set_={"level": statement.excluded.level, "awarded_at": statement.excluded.awarded_at},
            where=MemberBadge.level < statement.excluded.level,
        ).returning(MemberBadge.id)
    )
    if gained is None:
        return None
    signals.emit(
        session, "badge.awarded", member_id=member_id, badge_key=badge_key, level=level, at=now
    )
    return Award(AwardKind.BADGE, amount=level, key=badge_key)


async def badges_of_members(
    session: AsyncSession, member_ids: Sequence[int]
) -> dict[int, list[tuple[MemberBadge, Badge]]]:
    """Each member's badges (secret ones included: they were earned), newest first."""
    rows = await session.execute(
        select(MemberBadge, Badge)
        .join(Badge, Badge.id == MemberBadge.badge_id)
        .where(MemberBadge.member_id.in_(member_ids))
        .order_by(MemberBadge.awarded_at.desc(), MemberBadge.id.desc())
    )
    found: dict[int, list[tuple[MemberBadge, Badge]]] = {member_id: [] for member_id in member_ids}
    for member_badge, badge in rows:
        found[member_badge.member_id].append((member_badge, badge))
    return found
