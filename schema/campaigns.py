"""Campaigns (admin): ``campaigns`` and ``upsertCampaign``. How multipliers stack is
documented in ``campaigns.service``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from campaigns import service
from campaigns.models import Campaign as CampaignModel
from schema.errors import UserError
from schema.mutations import run_in_transaction
from schema.permissions import IsAdmin
from schema.program import Tier, all_tiers, tier_from_model


@strawberry.type(
    description="A time-boxed points multiplier (e.g. a double points weekend). Points earned "
    "= floor(base × tier multiplier × every matching campaign's multiplier)."
)
class Campaign:
    min_tier_id: strawberry.Private[int | None]
    key: str
    name: str
    multiplier: float
    starts_at: datetime
    ends_at: datetime = strawberry.field(description="Exclusive: the campaign ends at this time.")
    event_types: list[str] = strawberry.field(description="Empty: every event type.")

    @strawberry.field(description="Running now.")
    def active(self) -> bool:
        return self.starts_at <= datetime.now(UTC) < self.ends_at

    @strawberry.field(description="Only members of this tier or a higher one (null: everyone).")
    async def min_tier(self, info: Info) -> Tier | None:
        if self.min_tier_id is None:
            return None
        tiers = await all_tiers(info.context)
        found = next((t for t in tiers if t.id == self.min_tier_id), None)
        return tier_from_model(found) if found else None


def campaign_from_model(model: CampaignModel) -> Campaign:
    return Campaign(
        min_tier_id=model.min_tier_id,
        key=model.key,
        name=model.name,
        multiplier=float(Decimal(model.multiplier)),
        starts_at=model.starts_at,
        ends_at=model.ends_at,
        event_types=list(model.event_types),
    )


@strawberry.input
class UpsertCampaignInput:
    key: str
    name: str
    multiplier: float = strawberry.field(description="Above 0, at most 100 (2.0: double points).")
    starts_at: datetime
    ends_at: datetime
    event_types: list[str] | None = strawberry.field(
        default=None, description="Only these event types (null or empty: every type)."
    )
    min_tier: str | None = strawberry.field(
        default=None, description="A tier key: members of this tier or a higher one."
    )


@strawberry.type
class UpsertCampaignPayload:
    campaign: Campaign | None
    errors: list[UserError]


@strawberry.type
class CampaignQueries:
    @strawberry.field(
        permission_classes=[IsAdmin],
        description="Every campaign, soonest start first; activeAt: only those running then.",
    )
    async def campaigns(self, info: Info, active_at: datetime | None = None) -> list[Campaign]:
        async with info.context.reading() as session:
            found = await service.list_campaigns(session, active_at=active_at)
        return [campaign_from_model(c) for c in found]


@strawberry.type
class CampaignMutations:
    @strawberry.mutation(permission_classes=[IsAdmin])
    async def upsert_campaign(
        self, info: Info, input: UpsertCampaignInput
    ) -> UpsertCampaignPayload:
        data = service.CampaignInput(
            key=input.key,
            name=input.name,
            multiplier=input.multiplier,
            starts_at=input.starts_at,
            ends_at=input.ends_at,
            event_types=tuple(input.event_types or ()),
            min_tier=input.min_tier,
        )

        async def work(session: AsyncSession) -> UpsertCampaignPayload:
            campaign = await service.upsert_campaign(session, data)
            return UpsertCampaignPayload(campaign=campaign_from_model(campaign), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertCampaignPayload(campaign=None, errors=errors)
        )
