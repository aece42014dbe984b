"""Badges and titles: ``badges``, ``titles``, ``upsertBadge``, ``awardBadge``, ``upsertTitle``,
``grantTitle``, ``revokeTitle``, ``equipTitle`` and the member fields ``badges``, ``titles``,
``activeTitle``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from badges import service as badge_service
from badges import titles as title_service
from badges.models import Badge as BadgeModel
from badges.models import MemberBadge as MemberBadgeModel
from badges.models import Title as TitleModel
from members.models import Member as MemberModel
from members.service import require_member
from schema.context import Context
from schema.errors import UserError, forbidden
from schema.mutations import run_in_transaction
from schema.permissions import IsAdmin, IsMember, principal_of, require_member_external_id

if TYPE_CHECKING:
    from schema.member_type import Member

LazyMember = Annotated["Member", strawberry.lazy("schema.member_type")]


def _member(model: MemberModel) -> Member:
    from schema.member_type import member_from_model  # the Member type includes this module

    return member_from_model(model)


# ---- types -----------------------------------------------------------------------------------


@strawberry.type(
    description="A badge members earn. Leveled badges have levels 1..levels "
    "(e.g. 1 bronze, 2 silver, 3 gold); a secret badge is left out of `badges` until earned."
)
class Badge:
    key: str
    name: str
    description: str | None
    image_url: str | None
    levels: int
    secret: bool


def badge_from_model(model: BadgeModel) -> Badge:
    return Badge(
        key=model.key,
        name=model.name,
        description=model.description,
        image_url=model.image_url,
        levels=model.levels,
        secret=model.secret,
    )


@strawberry.type(description="A badge a member has earned, at its current level.")
class MemberBadge:
    badge: Badge
    level: int
    awarded_at: datetime = strawberry.field(description="When the current level was reached.")
    first_awarded_at: datetime = strawberry.field(description="When the badge was first earned.")


def member_badge_from(member_badge: MemberBadgeModel, badge: BadgeModel) -> MemberBadge:
    return MemberBadge(
        badge=badge_from_model(badge),
        level=member_badge.level,
        awarded_at=member_badge.awarded_at,
        first_awarded_at=member_badge.first_awarded_at,
    )


@strawberry.type(description='A title such as "Chief Experience Officer".')
class Title:
    key: str
    name: str
    description: str | None
    max_holders: int | None = strawberry.field(
        description="At most this many members hold it at once (null: no limit)."
    )


def title_from_model(model: TitleModel) -> Title:
    return Title(
        key=model.key,
        name=model.name,
        description=model.description,
        max_holders=model.max_holders,
    )


@strawberry.type(description="A title a member holds (expired holdings are not listed).")
class MemberTitle:
    title: Title
    granted_at: datetime
    expires_at: datetime | None
    active: bool = strawberry.field(description="The member shows this title (activeTitle).")


def member_title_from(holding: title_service.Holding) -> MemberTitle:
    return MemberTitle(
        title=title_from_model(holding.title),
        granted_at=holding.granted_at,
        expires_at=holding.expires_at,
        active=holding.equipped,
    )


# ---- member fields ---------------------------------------------------------------------------


def member_badges_loader(
    ctx: Context,
) -> DataLoader[int, list[tuple[MemberBadgeModel, BadgeModel]]]:
    async def load(member_ids: list[int]) -> list[list[tuple[MemberBadgeModel, BadgeModel]]]:
        async with ctx.reading() as session:
            found = await badge_service.badges_of_members(session, member_ids)
        return [found[member_id] for member_id in member_ids]

    return DataLoader(load_fn=load)


def member_titles_loader(ctx: Context) -> DataLoader[int, list[title_service.Holding]]:
    async def load(member_ids: list[int]) -> list[list[title_service.Holding]]:
        async with ctx.reading() as session:
            found = await title_service.holdings_of_members(session, member_ids, datetime.now(UTC))
        return [found[member_id] for member_id in member_ids]

    return DataLoader(load_fn=load)


@strawberry.type
class MemberBadgeFields:
    db_id: strawberry.Private[int]

    @strawberry.field(description="Badges the member has earned (secret ones too), newest first.")
    async def badges(self, info: Info) -> list[MemberBadge]:
        rows = await info.context.loader("member_badges", member_badges_loader).load(self.db_id)
        return [member_badge_from(member_badge, badge) for member_badge, badge in rows]

    @strawberry.field(description="Titles the member holds now, newest first.")
    async def titles(self, info: Info) -> list[MemberTitle]:
        holdings = await info.context.loader("member_titles", member_titles_loader).load(self.db_id)
        return [member_title_from(holding) for holding in holdings]

    @strawberry.field(description="The title the member shows (null: none, or it expired).")
    async def active_title(self, info: Info) -> Title | None:
        holdings = await info.context.loader("member_titles", member_titles_loader).load(self.db_id)
        active = next((h for h in holdings if h.equipped), None)
        return title_from_model(active.title) if active else None


# ---- queries ---------------------------------------------------------------------------------


@strawberry.type
class BadgeQueries:
    @strawberry.field(
        description="Badges in key order. Secret badges are left out unless an admin asks "
        "with includeSecret."
    )
    async def badges(self, info: Info, include_secret: bool = False) -> list[Badge]:
        if include_secret and not principal_of(info).is_admin:
            raise forbidden("only admins may list secret badges")
        async with info.context.reading() as session:
            found = await badge_service.list_badges(session, include_secret=include_secret)
        return [badge_from_model(badge) for badge in found]

    @strawberry.field(permission_classes=[IsAdmin], description="Every title, in key order.")
    async def titles(self, info: Info) -> list[Title]:
        async with info.context.reading() as session:
            return [title_from_model(t) for t in await title_service.list_titles(session)]


# ---- mutations -------------------------------------------------------------------------------


@strawberry.input
class UpsertBadgeInput:
    key: str
    name: str
    description: str | None = None
    image_url: str | None = None
    levels: int = 1
    secret: bool = False


@strawberry.type
class UpsertBadgePayload:
    badge: Badge | None
    errors: list[UserError]


@strawberry.input
class AwardBadgeInput:
    external_id: str
    badge_key: str
    level: int = 1


@strawberry.type
class AwardBadgePayload:
    member: LazyMember | None
    badge: MemberBadge | None = strawberry.field(description="The member's badge after the call.")
    awarded: bool = strawberry.field(description="False: the member already had this level.")
    errors: list[UserError]


@strawberry.input
class UpsertTitleInput:
    key: str
    name: str
    description: str | None = None
    max_holders: int | None = None


@strawberry.type
class UpsertTitlePayload:
    title: Title | None
    errors: list[UserError]


@strawberry.input
class GrantTitleInput:
    external_id: str
    title_key: str
    expires_at: datetime | None = None


@strawberry.type
class GrantTitlePayload:
    member: LazyMember | None
    granted: bool = strawberry.field(
        description="False: the member already held it (its expiry may have been extended)."
    )
    errors: list[UserError]


@strawberry.input
class RevokeTitleInput:
    external_id: str
    title_key: str


@strawberry.input
class EquipTitleInput:
    title_key: str | None = strawberry.field(default=None, description="null: take it off")


@strawberry.type
class TitleMemberPayload:
    member: LazyMember | None
    errors: list[UserError]


async def _member_work(
    info: Info, external_id: str, action: Callable[[AsyncSession, MemberModel], Awaitable[None]]
) -> TitleMemberPayload:
    async def work(session: AsyncSession) -> TitleMemberPayload:
        member = await require_member(session, external_id)
        await action(session, member)
        return TitleMemberPayload(member=_member(member), errors=[])

    return await run_in_transaction(
        info, work, lambda errors: TitleMemberPayload(member=None, errors=errors)
    )


@strawberry.type
class BadgeMutations:
    @strawberry.mutation(permission_classes=[IsAdmin])
    async def upsert_badge(self, info: Info, input: UpsertBadgeInput) -> UpsertBadgePayload:
        data = badge_service.BadgeInput(
            key=input.key,
            name=input.name,
            description=input.description,
            image_url=input.image_url,
            levels=input.levels,
            secret=input.secret,
        )

        async def work(session: AsyncSession) -> UpsertBadgePayload:
            badge = await badge_service.upsert_badge(session, data)
            return UpsertBadgePayload(badge=badge_from_model(badge), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertBadgePayload(badge=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Give a member a badge, or raise its level (never lowers it).",
    )
    async def award_badge(self, info: Info, input: AwardBadgeInput) -> AwardBadgePayload:
        async def work(session: AsyncSession) -> AwardBadgePayload:
            member = await require_member(session, input.external_id)
            award = await badge_service.award_badge(
                session, member.id, input.badge_key, input.level, now=datetime.now(UTC)
            )
            rows = (await badge_service.badges_of_members(session, [member.id]))[member.id]
            mine = next((member_badge_from(mb, b) for mb, b in rows if b.key == input.badge_key))
            return AwardBadgePayload(
                member=_member(member), badge=mine, awarded=award is not None, errors=[]
            )

        return await run_in_transaction(
            info,
            work,
            lambda errors: AwardBadgePayload(member=None, badge=None, awarded=False, errors=errors),
        )

    @strawberry.mutation(permission_classes=[IsAdmin])
    async def upsert_title(self, info: Info, input: UpsertTitleInput) -> UpsertTitlePayload:
        data = title_service.TitleInput(
            key=input.key,
            name=input.name,
            description=input.description,
            max_holders=input.max_holders,
        )

        async def work(session: AsyncSession) -> UpsertTitlePayload:
            title = await title_service.upsert_title(session, data, now=datetime.now(UTC))
            return UpsertTitlePayload(title=title_from_model(title), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertTitlePayload(title=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Grant a title (LIMIT_REACHED when maxHolders members hold it already).",
    )
    async def grant_title(self, info: Info, input: GrantTitleInput) -> GrantTitlePayload:
        async def work(session: AsyncSession) -> GrantTitlePayload:
            member = await require_member(session, input.external_id)
            award = await title_service.grant_title(
                session,
                member.id,
                input.title_key,
                expires_at=input.expires_at,
                now=datetime.now(UTC),
            )
            return GrantTitlePayload(member=_member(member), granted=award is not None, errors=[])

        return await run_in_transaction(
            info, work, lambda errors: GrantTitlePayload(member=None, granted=False, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin], description="Take a title away (and off, if shown)."
    )
    async def revoke_title(self, info: Info, input: RevokeTitleInput) -> TitleMemberPayload:
        async def revoke(session: AsyncSession, member: MemberModel) -> None:
            await title_service.revoke_title(session, member.id, input.title_key)

        return await _member_work(info, input.external_id, revoke)

    @strawberry.mutation(
        permission_classes=[IsMember],
        description="Show a title the caller holds (null titleKey: show none).",
    )
    async def equip_title(self, info: Info, input: EquipTitleInput) -> TitleMemberPayload:
        async def equip(session: AsyncSession, member: MemberModel) -> None:
            await title_service.equip_title(
                session, member.id, input.title_key, now=datetime.now(UTC)
            )

        return await _member_work(info, require_member_external_id(info), equip)
