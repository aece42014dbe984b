"""Member operations: registration, look-ups and the admin listing."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from members.lifecycle import STAGE_SQL, Stage, stage_params
from members.models import Member, Tier
from members.program import get_program
from members.rewards import grant_welcome
from members.tiers import qualify
from members.validation import validate_external_id, validate_timezone
from server import rawsql, signals
from server.errors import DomainError, ErrorCode, invalid, not_found

# Unambiguous characters only: codes are read aloud and typed on phones.
REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
REFERRAL_CODE_LENGTH = 8
MEMBER_STATUSES = ("active", "suspended")


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))


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
            signals.emit(
                session,
                "member.registered",
                member_id=member.id,
                display_name=member.display_name,
                at=member.joined_at,
            )
            await _welcome(session, member)
            return Registration(member, created=True)
        existing = await get_member_by_external_id(session, external_id)
        if existing is not None:
            if referrer_id is not None and existing.referred_by_id not in (None, referrer_id):
                raise DomainError(
                    ErrorCode.CONFLICT, "member already has a referrer", "referralCode"
                )
            return Registration(existing, created=False)
    raise DomainError(ErrorCode.CONFLICT, "could not allocate a referral code; try again")


async def _welcome(session: AsyncSession, member: Member) -> None:
    """What a new member gets at once: the base tier (if one needs no xp), welcome points."""
    await qualify(session, member.id, datetime.now(UTC))
    await grant_welcome(session, member, await get_program(session))
    await session.refresh(member)


async def get_member_by_external_id(session: AsyncSession, external_id: str) -> Member | None:
    return await session.scalar(select(Member).where(Member.external_id == external_id))


async def require_member(session: AsyncSession, external_id: str) -> Member:
    member = await get_member_by_external_id(session, external_id)
    if member is None:
        raise not_found(f"no member with externalId {external_id!r}", "externalId")
    return member


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A read-only member, as the API shows it (cheaper to load than an ORM object)."""

    id: int
    external_id: str
    display_name: str | None
    birthday: date | None
    timezone: str | None
    status: str
    referral_code: str
    joined_at: datetime
    last_active_at: datetime | None
    referred_by_id: int | None
    tier_id: int | None
    tier_since: datetime | None
    lifecycle_stage: str | None


MEMBER_ROW_SQL = (
    "SELECT id, external_id, display_name, birthday, timezone, status, referral_code,"
    " joined_at, last_active_at, referred_by_id, tier_id, tier_since, lifecycle_stage"
    " FROM members WHERE "
)


async def members_by_ids(session: rawsql.Queryable, ids: Sequence[int]) -> dict[int, MemberRow]:
    """Batch look-up for DataLoaders (one round trip on the raw connection)."""
    rows = await rawsql.fetch(session, MEMBER_ROW_SQL + "id = any($1::bigint[])", list(ids))
    return {row["id"]: MemberRow(*row) for row in rows}


async def members_by_external_ids(
    session: rawsql.Queryable, external_ids: Sequence[str]
) -> dict[str, MemberRow]:
    rows = await rawsql.fetch(
        session, MEMBER_ROW_SQL + "external_id = any($1::text[])", list(external_ids)
    )
    return {row["external_id"]: MemberRow(*row) for row in rows}


@dataclass(frozen=True)
class MemberListFilter:
    status: str | None = None
    search: str | None = None  # prefix of externalId or displayName
    joined_after: datetime | None = None
    joined_before: datetime | None = None
    tier_key: str | None = None
    stage: str | None = None  # a lifecycle stage, computed live (see members.lifecycle)
    min_days_inactive: int | None = None
    now: datetime | None = None  # the clock for stage and inactivity (default: now)


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
    now = filters.now or datetime.now(UTC)
    if filters.tier_key is not None:
        tier_id = await session.scalar(select(Tier.id).where(Tier.key == filters.tier_key))
        if tier_id is None:
            raise not_found(f"no tier {filters.tier_key!r}", "filter.tier")
        query = query.where(Member.tier_id == tier_id)
    if filters.min_days_inactive is not None:
        if filters.min_days_inactive < 0:
            raise invalid("daysInactive cannot be negative", "filter.daysInactive")
        last_seen = func.coalesce(Member.last_active_at, Member.joined_at)
        query = query.where(last_seen <= now - timedelta(days=filters.min_days_inactive))
    if filters.stage is not None:
        if filters.stage not in Stage.__members__:
            raise invalid(f"stage must be one of {', '.join(Stage)}", "filter.stage")
        params = stage_params(now, await get_program(session))
        query = query.where(
            text(f"({STAGE_SQL}) = :wanted_stage").bindparams(wanted_stage=filters.stage, **params)
        )
    return list(await session.scalars(query))


async def set_status(session: AsyncSession, external_id: str, status: str) -> Member:
    """Suspend or reactivate a member. A suspended member can neither earn nor redeem."""
    if status not in MEMBER_STATUSES:
        raise invalid(f"status must be one of {', '.join(MEMBER_STATUSES)}", "status")
    member = await require_member(session, external_id)
    member.status = status
    await session.flush()
    return member


class HasStatus(Protocol):
    @property
    def status(self) -> str: ...


def require_active(member: HasStatus) -> None:
    if member.status != "active":
        raise DomainError(ErrorCode.NOT_ELIGIBLE, "this member is suspended", "externalId")


async def touch(session: AsyncSession, member_id: int, now: datetime) -> None:
    """Record member activity (every member action calls this): ``lastActiveAt`` only ever
    moves forward, so a late event cannot make a member look less recently active. One raw
    statement: it is on the path of every member action."""
    await rawsql.execute(
        session,
        "UPDATE members SET last_active_at = $2 WHERE id = $1"
        " AND (last_active_at IS NULL OR last_active_at < $2)",
        member_id,
        now,
    )
