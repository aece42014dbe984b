"""Titles: curation (``upsertTitle``), granting and revoking, and the one title a member shows.

Holding rules
- A member holds a title from its grant until ``expires_at`` (if any) or until it is revoked.
  An expired title is not held: it is not listed, not shown as active, and does not count
  toward ``max_holders``. Granting an expired title again starts a new holding.
- ``max_holders`` is never exceeded, even under concurrent grants: a grant locks the title
  row (``FOR NO KEY UPDATE``), so grants of one title run one after the other, and each counts
  the current holders with a fresh snapshot (READ COMMITTED) before inserting.
- Granting a title the member already holds changes nothing except that the expiry becomes
  the later of the two (no expiry counts as latest): a grant never shortens a holding.
- ``equipped`` marks the member's active title; revoking a title deletes the holding, which
  unequips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from badges.models import MemberTitle, Title
from badges.validation import validate_description, validate_name
from members.validation import validate_key
from server import signals
from server.awards import Award, AwardKind
from server.errors import DomainError, ErrorCode, invalid, not_found

MAX_HOLDERS_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class TitleInput:
    key: str
    name: str
    description: str | None = None
    max_holders: int | None = None


def held_at(now: datetime) -> ColumnElement[bool]:
    """The holding is current at ``now`` (not expired)."""
    return or_(MemberTitle.expires_at.is_(None), MemberTitle.expires_at > now)


async def upsert_title(session: AsyncSession, data: TitleInput, *, now: datetime) -> Title:
    """Create or update a title. Lowering ``max_holders`` below the current number of holders
    is a ``CONFLICT`` (revoke some first)."""
    validate_key(data.key)
    values = {
        "name": validate_name(data.name),
        "description": validate_description(data.description),
        "max_holders": data.max_holders,
        "updated_at": text("now()"),
    }
    if data.max_holders is not None and not 1 <= data.max_holders <= MAX_HOLDERS_LIMIT:
        raise invalid("maxHolders must be at least 1 (or null: no limit)", "maxHolders")
    title_id = await session.scalar(
        insert(Title)
        .values(key=data.key, **values)
        .on_conflict_do_update(index_elements=[Title.key], set_=values)
        .returning(Title.id)
    )
    assert title_id is not None
    if data.max_holders is not None:
        holders = await count_holders(session, title_id, now)
        if holders > data.max_holders:
            raise DomainError(
                ErrorCode.CONFLICT, f"{holders} members hold this title already", "maxHolders"
            )
    return await session.get_one(Title, title_id, populate_existing=True)


async def list_titles(session: AsyncSession) -> list[Title]:
    return list(await session.scalars(select(Title).order_by(Title.key)))


async def require_title(
    session: AsyncSession, key: str, field: str = "titleKey", *, lock: bool = False
) -> Title:
    query = select(Title).where(Title.key == key)
    if lock:
        query = query.with_for_update(key_share=True)  # FOR NO KEY UPDATE
    title = await session.scalar(query)
    if title is None:
        raise not_found(f"no title {key!r}", field)
    return title


async def count_holders(session: AsyncSession, title_id: int, now: datetime) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(MemberTitle)
        .where(MemberTitle.title_id == title_id, held_at(now))
    )
    return int(count or 0)


async def grant_title(
    session: AsyncSession,
    member_id: int,
    title_key: str,
    *,
    expires_at: datetime | None = None,
    now: datetime,
) -> Award | None:
    """Grant ``title_key`` to the member until ``expires_at`` (None: no expiry).

    Returns ``Award(TITLE, key=title_key)`` for a new holding, None when the member already
    held it (the expiry may be extended, see the module docstring). ``LIMIT_REACHED`` when
    ``max_holders`` members hold it; ``NOT_FOUND`` for an unknown title; ``INVALID_INPUT``
    for an expiry that is not in the future.
    """
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)  # a naive timestamp is read as UTC
    if expires_at is not None and expires_at <= now:
        raise invalid("expiresAt must be in the future", "expiresAt")
    title = await require_title(session, title_key, lock=True)
    current = await session.scalar(
        select(MemberTitle).where(
            MemberTitle.member_id == member_id, MemberTitle.title_id == title.id
        )
    )
    if current is not None and (current.expires_at is None or current.expires_at > now):
        if current.expires_at is not None and (
            expires_at is None or expires_at > current.expires_at
        ):
            current.expires_at = expires_at
            await session.flush()
        return None
    if title.max_holders is not None and await count_holders(session, title.id, now) >= (
        title.max_holders
    ):
        raise DomainError(
            ErrorCode.LIMIT_REACHED,
            f"{title.name!r} is already held by {title.max_holders} member(s)",
            "titleKey",
        )
    holding = {"granted_at": now, "expires_at": expires_at, "equipped": False}
    await session.execute(
        insert(MemberTitle)
        .values(member_id=member_id, title_id=title.id, **holding)
        .on_conflict_do_update(
            index_elements=[MemberTitle.member_id, MemberTitle.title_id], set_=holding
        )
    )
    signals.emit(
        session,
        "title.granted",
        member_id=member_id,
        title_key=title_key,
        expires_at=expires_at,
        at=now,
    )
    return Award(AwardKind.TITLE, key=title_key)


async def revoke_title(session: AsyncSession, member_id: int, title_key: str) -> None:
    """Take the title away (and off, if equipped). ``NOT_FOUND`` if the member has no
    holding of it, expired or not."""
    title = await require_title(session, title_key)
    removed = await session.scalar(
        delete(MemberTitle)
        .where(MemberTitle.member_id == member_id, MemberTitle.title_id == title.id)
        .returning(MemberTitle.id)
    )
    if removed is None:
        raise not_found("the member does not hold this title", "titleKey")


async def equip_title(
    session: AsyncSession, member_id: int, title_key: str | None, *, now: datetime
) -> None:
    """Show ``title_key`` as the member's active title; None takes the current one off.
    ``NOT_FOUND`` for an unknown title, ``NOT_ELIGIBLE`` for one the member does not hold
    (or whose holding has expired)."""
    target_id: int | None = None
    if title_key is not None:
        title = await require_title(session, title_key)
        target_id = await session.scalar(
            select(MemberTitle.title_id).where(
                MemberTitle.member_id == member_id, MemberTitle.title_id == title.id, held_at(now)
            )
        )
        if target_id is None:
            raise DomainError(ErrorCode.NOT_ELIGIBLE, "you do not hold this title", "titleKey")
    # Lock the member's holdings first: two concurrent equips then run one after the other.
    # Unequip before equipping: the partial unique index is checked row by row, so one
    # UPDATE that switches two rows could trip over it.
    await session.execute(
        select(MemberTitle.id).where(MemberTitle.member_id == member_id).with_for_update()
    )
    await session.execute(
        update(MemberTitle)
        .where(MemberTitle.member_id == member_id, MemberTitle.equipped)
        .where(MemberTitle.title_id != target_id if target_id is not None else true())
        .values(equipped=False)
    )
    if target_id is not None:
        await session.execute(
            update(MemberTitle)
            .where(MemberTitle.member_id == member_id, MemberTitle.title_id == target_id)
            .values(equipped=True)
        )


@dataclass(frozen=True)
class Holding:
    title: Title
    granted_at: datetime
    expires_at: datetime | None
    equipped: bool


async def holdings_of_members(
    session: AsyncSession, member_ids: Sequence[int], now: datetime
) -> dict[int, list[Holding]]:
    """Each member's current (unexpired) titles, newest grant first."""
    rows = await session.execute(
        select(MemberTitle, Title)
        .join(Title, Title.id == MemberTitle.title_id)
        .where(MemberTitle.member_id.in_(member_ids), held_at(now))
        .order_by(MemberTitle.granted_at.desc(), MemberTitle.id.desc())
    )
    found: dict[int, list[Holding]] = {member_id: [] for member_id in member_ids}
    for holding, title in rows:
        found[holding.member_id].append(
            Holding(title, holding.granted_at, holding.expires_at, holding.equipped)
        )
    return found
