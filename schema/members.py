"""Members: ``me``, ``member``, ``members`` and ``registerMember``."""

from __future__ import annotations

from datetime import UTC, date, datetime

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from ledger.types import Balances
from members import service
from members.service import MemberRow
from members.view import USUAL_CURRENCIES, MemberView, member_view
from schema.context import Context
from schema.errors import UserError
from schema.ledger import balances_loader
from schema.member_type import Member, member_from_model
from schema.mutations import run_in_transaction
from schema.pagination import Connection, build_connection, decode_int_cursor, page_size
from schema.permissions import (
    IsAdmin,
    principal_of,
    require_access_to_member,
    require_member_external_id,
)
from schema.program import all_tiers, xp_in_window_loader
from schema.selection import asks_for


def member_by_external_id_loader(ctx: Context) -> DataLoader[str, MemberRow | None]:
    async def load(external_ids: list[str]) -> list[MemberRow | None]:
        async with ctx.querying() as session:
            found = await service.members_by_external_ids(session, external_ids)
        return [found.get(external_id) for external_id in external_ids]

    return DataLoader(load_fn=load)


def member_by_id_loader(ctx: Context) -> DataLoader[int, MemberRow | None]:
    async def load(ids: list[int]) -> list[MemberRow | None]:
        async with ctx.querying() as session:
            found = await service.members_by_ids(session, ids)
        return [found.get(member_id) for member_id in ids]

    return DataLoader(load_fn=load)


async def load_member(info: Info, external_id: str) -> Member | None:
    """The member for ``me`` / ``member``. When the query also asks for balances or tier
    progress, they are read in the same statement (``members.view``) and primed into the
    loaders their resolvers use: one round trip instead of three."""
    ctx: Context = info.context
    loader = ctx.loader("member_by_external_id", member_by_external_id_loader)
    want_balances = asks_for(info, "balance", "pendingBalance")
    want_xp = asks_for(info, "tierProgress")
    if not (want_balances or want_xp) or loader.cache_map.get(external_id) is not None:
        model = await loader.load(external_id)
        return member_from_model(model) if model else None
    async with ctx.querying() as connection:
        view = await member_view(
            connection,
            external_id,
            tiers=await all_tiers(ctx),
            balances=want_balances,
            xp=want_xp,
            now=datetime.now(UTC),
        )
    if view is None:
        loader.prime(external_id, None)
        return None
    _prime(ctx, view)
    loader.prime(external_id, view.member)
    return member_from_model(view.member)


def _prime(ctx: Context, view: MemberView) -> None:
    member_id = view.member.id
    if view.balances is not None:
        balances = ctx.loader("ledger_balances", balances_loader)
        for currency in USUAL_CURRENCIES:  # no account in a currency: nothing in it
            balances.prime((member_id, currency), Balances(0, 0))
        for currency, found in view.balances.items():
            balances.prime((member_id, currency), found, force=True)
    if view.xp_earned is not None:
        xp = ctx.loader("xp_in_window", xp_in_window_loader)
        xp.prime((member_id, view.window_days), view.xp_earned)


@strawberry.input
class MemberFilter:
    status: str | None = strawberry.field(default=None, description="active or suspended")
    search: str | None = strawberry.field(
        default=None, description="prefix of externalId or displayName"
    )
    joined_after: datetime | None = None
    joined_before: datetime | None = None
    tier: str | None = strawberry.field(default=None, description="a tier key")
    stage: str | None = strawberry.field(
        default=None, description="a lifecycle stage, e.g. AT_RISK (for win-back campaigns)"
    )
    days_inactive: int | None = strawberry.field(
        default=None, description="members inactive for at least this many days"
    )


@strawberry.type
class MemberQueries:
    @strawberry.field(description="The caller's own member (member token).")
    async def me(self, info: Info) -> Member | None:
        return await load_member(info, require_member_external_id(info))

    @strawberry.field(description="A member by externalId (admin or events key; a member: itself).")
    async def member(self, info: Info, external_id: str) -> Member | None:
        require_access_to_member(info, external_id)
        return await load_member(info, external_id)

    @strawberry.field(permission_classes=[IsAdmin], description="All members, oldest first.")
    async def members(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        filter: MemberFilter | None = None,
    ) -> Connection[Member]:
        limit = page_size(first)
        after_id = decode_int_cursor("member", after)
        criteria = filter or MemberFilter()
        async with info.context.reading() as session:
            rows = await service.list_members(
                session,
                limit=limit + 1,
                after_id=after_id,
                filters=service.MemberListFilter(
                    status=criteria.status,
                    search=criteria.search,
                    joined_after=criteria.joined_after,
                    joined_before=criteria.joined_before,
                    tier_key=criteria.tier,
                    stage=criteria.stage,
                    min_days_inactive=criteria.days_inactive,
                ),
            )
        return build_connection(rows, limit, "member", lambda m: str(m.id), member_from_model)


@strawberry.input
class RegisterMemberInput:
    external_id: str
    display_name: str | None = None
    birthday: date | None = None
    timezone: str | None = None
    referral_code: str | None = None


@strawberry.type
class RegisterMemberPayload:
    member: Member | None
    errors: list[UserError]


@strawberry.input
class SetMemberStatusInput:
    external_id: str
    status: str = strawberry.field(description="active or suspended")


@strawberry.type
class MemberPayload:
    member: Member | None
    errors: list[UserError]


@strawberry.type
class MemberMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Suspend (no earning, no redeeming) or reactivate a member.",
    )
    async def set_member_status(self, info: Info, input: SetMemberStatusInput) -> MemberPayload:
        async def work(session: AsyncSession) -> MemberPayload:
            member = await service.set_status(session, input.external_id, input.status)
            return MemberPayload(member=member_from_model(member), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: MemberPayload(member=None, errors=errors)
        )

    @strawberry.mutation(
        description="Register a member; idempotent by externalId (admin, events key, or the "
        "member's own token)."
    )
    async def register_member(
        self, info: Info, input: RegisterMemberInput
    ) -> RegisterMemberPayload:
        require_access_to_member(info, input.external_id)

        async def work(session: AsyncSession) -> RegisterMemberPayload:
            registration = await service.register_member(
                session,
                external_id=input.external_id,
                display_name=input.display_name,
                birthday=input.birthday,
                timezone=input.timezone,
                referral_code=input.referral_code,
            )
            return RegisterMemberPayload(member=member_from_model(registration.member), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: RegisterMemberPayload(member=None, errors=errors)
        )


__all__ = ["MemberMutations", "MemberQueries", "member_by_id_loader", "principal_of"]
