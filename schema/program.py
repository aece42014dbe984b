"""Program settings (``configureProgram``, ``program``) and tiers (``upsertTier``, ``tiers``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from members import program as program_service
from members import tiers as tier_service
from members.lifecycle import stage_of
from members.models import Tier as TierModel
from schema.context import Context
from schema.errors import UserError
from schema.mutations import run_in_transaction
from schema.permissions import IsAdmin


@strawberry.type(description="A membership tier; members qualify by xp earned in a window.")
class Tier:
    db_id: strawberry.Private[int]
    key: str
    name: str
    rank: int
    xp_threshold: int
    points_multiplier: float
    retention_xp: int | None
    window_days: int | None
    benefits: list[str]


def tier_from_model(model: TierModel) -> Tier:
    return Tier(
        db_id=model.id,
        key=model.key,
        name=model.name,
        rank=model.rank,
        xp_threshold=model.xp_threshold,
        points_multiplier=float(Decimal(model.points_multiplier)),
        retention_xp=model.retention_xp,
        window_days=model.window_days,
        benefits=list(model.benefits),
    )


@strawberry.type(description="The program's rules, editable at run time.")
class Program:
    timezone: str
    welcome_points: int
    birthday_points: int
    points_lifetime_days: int | None
    pending_days: int
    referrer_reward: int
    referee_reward: int
    referral_qualifying_event: str | None
    max_referral_rewards_per_month: int | None
    new_member_days: int
    retained_days: int
    loyal_days: int
    at_risk_days: int
    lapsed_days: int


def program_from_settings(settings: program_service.Program) -> Program:
    return Program(**settings.__dict__)


@strawberry.input
class ConfigureProgramInput:
    timezone: str | None = strawberry.UNSET
    welcome_points: int | None = strawberry.UNSET
    birthday_points: int | None = strawberry.UNSET
    points_lifetime_days: int | None = strawberry.UNSET
    pending_days: int | None = strawberry.UNSET
    referrer_reward: int | None = strawberry.UNSET
    referee_reward: int | None = strawberry.UNSET
    referral_qualifying_event: str | None = strawberry.UNSET
    max_referral_rewards_per_month: int | None = strawberry.UNSET
    new_member_days: int | None = strawberry.UNSET
    retained_days: int | None = strawberry.UNSET
    loyal_days: int | None = strawberry.UNSET
    at_risk_days: int | None = strawberry.UNSET
    lapsed_days: int | None = strawberry.UNSET


@strawberry.type
class ConfigureProgramPayload:
    program: Program | None
    errors: list[UserError]


@strawberry.input
class UpsertTierInput:
    key: str
    name: str
    rank: int
    xp_threshold: int
    points_multiplier: float = 1.0
    retention_xp: int | None = None
    window_days: int | None = 365
    benefits: list[str] | None = None


@strawberry.type
class UpsertTierPayload:
    tier: Tier | None
    errors: list[UserError]


@strawberry.type
class ProgramQueries:
    @strawberry.field(description="Membership tiers, lowest rank first.")
    async def tiers(self, info: Info) -> list[Tier]:
        async with info.context.reading() as session:
            return [tier_from_model(t) for t in await tier_service.list_tiers(session)]

    @strawberry.field(permission_classes=[IsAdmin], description="The program's settings.")
    async def program(self, info: Info) -> Program:
        async with info.context.reading() as session:
            return program_from_settings(await program_service.get_program(session, fresh=True))


@strawberry.type
class ProgramMutations:
    @strawberry.mutation(permission_classes=[IsAdmin])
    async def configure_program(
        self, info: Info, input: ConfigureProgramInput
    ) -> ConfigureProgramPayload:
        changes = {
            name: value for name, value in vars(input).items() if value is not strawberry.UNSET
        }

        async def work(session: AsyncSession) -> ConfigureProgramPayload:
            updated = await program_service.configure_program(session, changes)
            return ConfigureProgramPayload(program=program_from_settings(updated), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: ConfigureProgramPayload(program=None, errors=errors)
        )

    @strawberry.mutation(permission_classes=[IsAdmin])
    async def upsert_tier(self, info: Info, input: UpsertTierInput) -> UpsertTierPayload:
        data = tier_service.TierInput(
            key=input.key,
            name=input.name,
            rank=input.rank,
            xp_threshold=input.xp_threshold,
            points_multiplier=input.points_multiplier,
            retention_xp=input.retention_xp,
            window_days=input.window_days,
            benefits=tuple(input.benefits or ()),
        )

        async def work(session: AsyncSession) -> UpsertTierPayload:
            tier = await tier_service.upsert_tier(session, data)
            return UpsertTierPayload(tier=tier_from_model(tier), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertTierPayload(tier=None, errors=errors)
        )


@strawberry.type(description="How far a member is from the next tier.")
class TierProgress:
    current: Tier | None
    next: Tier | None
    xp_in_window: int = strawberry.field(description="xp earned in the next tier's window")
    xp_needed: int = strawberry.field(description="xp still needed for the next tier; 0 at top")


def tiers_loader(ctx: Context) -> DataLoader[str, list[TierModel]]:
    """All tiers, loaded once per request (tiers are few; every member row needs them)."""

    async def load(keys: list[str]) -> list[list[TierModel]]:
        async with ctx.reading() as session:
            tiers = await tier_service.list_tiers(session)
        return [tiers for _ in keys]

    return DataLoader(load_fn=load)


def xp_in_window_loader(ctx: Context) -> DataLoader[tuple[int, int | None], int]:
    """(member id, window in days or None for lifetime) -> xp earned in it; primed by
    ``schema.members`` when the member was read with ``members.view``."""

    async def load(keys: list[tuple[int, int | None]]) -> list[int]:
        now = datetime.now(UTC)
        async with ctx.querying() as connection:
            return [
                await tier_service.xp_earned(
                    connection, member_id, now - timedelta(days=days) if days else None
                )
                for member_id, days in keys
            ]

    return DataLoader(load_fn=load)


async def all_tiers(ctx: Context) -> list[TierModel]:
    """Every tier, lowest first: the process cache when fresh (most requests), else one
    query per request through the loader."""
    cached = tier_service.cached_tiers()
    if cached is not None:
        return cached
    return await ctx.loader("tiers", tiers_loader).load("all")


async def program_settings(ctx: Context) -> program_service.Program:
    cached = program_service.cached_program()
    if cached is not None:
        return cached
    return await ctx.loader("program", program_loader).load("program")


def program_loader(ctx: Context) -> DataLoader[str, program_service.Program]:
    async def load(keys: list[str]) -> list[program_service.Program]:
        async with ctx.reading() as session:
            settings = await program_service.get_program(session)
        return [settings for _ in keys]

    return DataLoader(load_fn=load)


@strawberry.type(description="One change of a member's tier, with its reason.")
class TierChange:
    from_tier: Tier | None
    to_tier: Tier | None
    reason: str = strawberry.field(description="upgrade or retention")
    xp_in_window: int
    changed_at: datetime


@strawberry.type
class MemberTierFields:
    db_id: strawberry.Private[int]
    tier_id: strawberry.Private[int | None]
    joined_at_value: strawberry.Private[datetime]
    last_active_value: strawberry.Private[datetime | None]

    @strawberry.field(description="The member's current tier (null before the first one).")
    async def tier(self, info: Info) -> Tier | None:
        tiers = await all_tiers(info.context)
        found = next((t for t in tiers if t.id == self.tier_id), None)
        return tier_from_model(found) if found else None

    @strawberry.field(description="xp needed for the next tier.")
    async def tier_progress(self, info: Info) -> TierProgress:
        tiers = await all_tiers(info.context)
        current, target, window = tier_service.progress_window(self.tier_id, tiers)
        loader = info.context.loader("xp_in_window", xp_in_window_loader)
        progress = tier_service.progress_of(
            current, target, await loader.load((self.db_id, window))
        )
        return TierProgress(
            current=tier_from_model(progress.current) if progress.current else None,
            next=tier_from_model(progress.next) if progress.next else None,
            xp_in_window=progress.xp_in_window,
            xp_needed=progress.xp_needed,
        )

    @strawberry.field(description="Every tier change of the member, newest first.")
    async def tier_history(self, info: Info) -> list[TierChange]:
        tiers = await all_tiers(info.context)
        by_id = {t.id: tier_from_model(t) for t in tiers}
        async with info.context.reading() as session:
            changes = await tier_service.tier_history(session, self.db_id)
        return [
            TierChange(
                from_tier=by_id.get(change.from_tier_id or -1),
                to_tier=by_id.get(change.to_tier_id or -1),
                reason=change.reason,
                xp_in_window=change.xp_in_window,
                changed_at=change.created_at,
            )
            for change in changes
        ]

    @strawberry.field(description="NEW, ENGAGED, RETAINED, LOYAL, AT_RISK or LAPSED.")
    async def lifecycle_stage(self, info: Info) -> str:
        settings = await program_settings(info.context)
        return stage_of(
            self.joined_at_value, self.last_active_value, datetime.now(UTC), settings
        ).value
