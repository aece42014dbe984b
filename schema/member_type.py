"""The ``Member`` GraphQL type, composed from per-domain field groups.

Each domain module contributes a small ``@strawberry.type`` mixin of resolvers that read
``self.db_id`` (e.g. the ledger adds ``balance``); ``Member`` inherits them all, so the type
stays one object for clients while each domain keeps its own fields in its own module.
"""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from members.models import Member as MemberModel
from members.service import MemberRow
from schema.badges import MemberBadgeFields
from schema.ledger import MemberLedgerFields
from schema.program import MemberTierFields
from schema.quests import MemberQuestFields
from schema.redemptions import MemberRedemptionFields
from schema.referrals import MemberReferralFields


@strawberry.type
class MemberCoreFields:
    db_id: strawberry.Private[int]
    id: strawberry.ID
    external_id: str
    display_name: str | None
    joined_at: datetime
    last_active_at: datetime | None
    referral_code: str
    birthday: date | None
    timezone: str | None
    status: str


@strawberry.type(description="A member of the loyalty program.")
class Member(
    MemberCoreFields,
    MemberLedgerFields,
    MemberTierFields,
    MemberQuestFields,
    MemberBadgeFields,
    MemberReferralFields,
    MemberRedemptionFields,
):
    pass


def member_from_model(model: MemberModel | MemberRow) -> Member:
    return Member(
        db_id=model.id,
        id=strawberry.ID(str(model.id)),
        external_id=model.external_id,
        display_name=model.display_name,
        joined_at=model.joined_at,
        last_active_at=model.last_active_at,
        referral_code=model.referral_code,
        birthday=model.birthday,
        timezone=model.timezone,
        timezone_value=model.timezone,
        status=model.status,
        tier_id=model.tier_id,
        joined_at_value=model.joined_at,
        last_active_value=model.last_active_at,
    )
