"""Referrals: the member field ``referrals`` (the referral code is ``Member.referralCode``;
the link is made by ``registerMember(referralCode)``, rewards by ``recordEvent``)."""

from __future__ import annotations

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from referrals import service
from schema.context import Context


@strawberry.type(description="How a member's referrals are doing.")
class ReferralStats:
    referred: int = strawberry.field(description="Members who joined with this member's code.")
    qualified: int = strawberry.field(
        description="Of those, how many performed the program's qualifying event."
    )
    rewarded: int = strawberry.field(
        description="Qualified referrals that earned this member the referrer reward "
        "(the others hit the monthly cap or came while no reward was due)."
    )


def referral_stats_loader(ctx: Context) -> DataLoader[int, service.ReferralStats]:
    async def load(member_ids: list[int]) -> list[service.ReferralStats]:
        async with ctx.reading() as session:
            found = await service.referral_stats(session, member_ids)
        return [found[member_id] for member_id in member_ids]

    return DataLoader(load_fn=load)


@strawberry.type
class MemberReferralFields:
    db_id: strawberry.Private[int]

    @strawberry.field(description="The member's referrals: referred, qualified and rewarded.")
    async def referrals(self, info: Info) -> ReferralStats:
        stats = await info.context.loader("referral_stats", referral_stats_loader).load(self.db_id)
        return ReferralStats(
            referred=stats.referred, qualified=stats.qualified, rewarded=stats.rewarded
        )
