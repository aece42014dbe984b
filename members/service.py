"""Member operations: registration, look-ups and the admin listing."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Member
from server.errors import DomainError, ErrorCode, invalid, not_found

# Unambiguous characters only: codes are read aloud and typed on phones.
REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
REFERRAL_CODE_LENGTH = 8
MEMBER_STATUSES = ("active", "suspended")


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))


def validate_timezone(name: str, field: str = "timezone") -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise invalid(f"unknown timezone {name!r}", field) from exc
    return name


def validate_external_id(external_id: str) -> str:
    if not external_id or len(external_id) > 255 or external_id != external_id.strip():
        raise invalid(
            "externalId must be 1 to 255 characters, without surrounding spaces", "externalId"
        )
    return external_id


@dataclass(frozen=True)
class Registration:
    member: Member
    created: bool


async def register_member(
    session: AsyncSession,
    *,
    external_id: str,
    display_name: str | None = None,
    birthday: date | None = None,
    timezone: str | None = None,
    referral_code: str | None = None,
    today: date | None = None,
) -> Registration:
    """Create a member, or return the existing one with that externalId (registration is
    idempotent by externalId: a retried call never creates two members)."""
    validate_external_id(external_id)
    if display_name is not None and len(display_name) > 255:
        raise invalid("displayName is limited to 255 characters", "displayName")
    if timezone is not None:
        validate_timezone(timezone)
    if birthday is not None and birthday > (today or date.today()):
        raise invalid("birthday cannot be in the future", "birthday")
    referrer_id: int | None = None
    if referral_code:
        referrer_id = await session.scalar(
            select(Member.id).where(Member.referral_code == referral_code.strip().upper())
        )
        if referrer_id is None:
            raise not_found(f"no member has referral code {referral_code!r}", "referralCode")

    for _ in range(5):  # referral codes are random: retry on the (rare) collision
        code = new_referral_code()
        inserted = await session.scalar(
            insert(Member)
            .values(
                external_id=external_id,
                display_name=display_name,
                birthday=birthday,
                timezone=timezone,
                referral_code=code,
                referred_by_id=referrer_id,
            )
            .on_conflict_do_nothing()
            .returning(Member.id)
        )
        if inserted is not None:
            member = await session.get_one(Member, inserted)
            return Registration(member, created=True)
        existing = await get_member_by_external_id(session, external_id)
        if existing is not None:
            if referrer_id is not None and existing.referred_by_id not in (None, referrer_id):
                raise DomainError(
                    ErrorCode.CONFLICT, "member already has a referrer", "referralCode"
                )
            return Registration(existing, created=False)
    raise DomainError(ErrorCode.CONFLICT, "could not allocate a referral code; try again")


async def get_member_by_external_id(session: AsyncSession, external_id: str) -> Member | None:
    return await session.scalar(select(Member).where(Member.external_id == external_id))


async def require_member(session: AsyncSession, external_id: str) -> Member:
    member = await get_member_by_external_id(session, external_id)
    if member is None:
        raise not_found(f"no member with externalId {external_id!r}", "externalId")
    return member


async def members_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Member]:
    rows = await session.scalars(select(Member).where(Member.id.in_(ids)))
    return {m.id: m for m in rows}


async def members_by_external_ids(
    session: AsyncSession, external_ids: Sequence[str]
) -> dict[str, Member]:
    rows = await session.scalars(select(Member).where(Member.external_id.in_(external_ids)))
    return {m.external_id: m for m in rows}


@dataclass(frozen=True)
class MemberListFilter:
    status: str | None = None
    search: str | None = None  # prefix of externalId or displayName
    joined_after: datetime | None = None
    joined_before: datetime | None = None


async def list_members(
    session: AsyncSession, *, limit: int, after_id: int | None, filters: MemberListFilter
) -> list[Member]:
    """Members in id order, keyset-paginated (``after_id``); fetch ``limit`` rows."""
    query = select(Member).order_by(Member.id).limit(limit)
    if after_id is not None:
        query = query.where(Member.id > after_id)
    if filters.status:
        if filters.status not in MEMBER_STATUSES:
            raise invalid(f"status must be one of {', '.join(MEMBER_STATUSES)}", "filter.status")
        query = query.where(Member.status == filters.status)
    if filters.search:
        pattern = filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            Member.external_id.like(pattern, escape="\\")
            | Member.display_name.ilike(pattern, escape="\\")
        )
    if filters.joined_after:
        query = query.where(Member.joined_at >= filters.joined_after)
    if filters.joined_before:
        query = query.where(Member.joined_at < filters.joined_before)
    return list(await session.scalars(query))
