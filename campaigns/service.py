"""Campaigns: time-boxed points multipliers ("double points weekend").

Stacking rule
-------------
Points earned for an event are::

    final = floor(base × tier multiplier × product of the multipliers of every matching campaign)

computed exactly (``Decimal``) and rounded DOWN once, at the very end
(``members.tiers.apply_multiplier``); never rounded per factor, so stacking never loses or
invents a point through intermediate rounding. Example: base 15, Silver ×1.25, a ×2 weekend
and a ×1.5 coffee campaign: 15 × 1.25 × 2 × 1.5 = 56.25 → 56 points.

A campaign matches an event when
- ``starts_at <= at < ends_at`` (``at`` is when the event occurred, so a late event gets the
  campaigns of its own time),
- its ``event_types`` is empty or contains the event's type, and
- it has no ``min_tier``, or the member's tier ranks at least as high as ``min_tier``
  (a member without a tier matches only campaigns without ``min_tier``).

Multipliers apply to points only (xp, the growth currency, is never multiplied here); the
earning pipeline decides which grants pass through them.

Every event consults :func:`campaign_multiplier`, so the campaigns that can still matter
(ended less than ``LOOKBACK`` ago, running, or upcoming) are cached per process for
``CACHE_SECONDS``; an upsert clears this process's copy, other processes see it within the TTL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.models import Campaign
from members.tiers import cached_tiers, list_tiers, require_tier
from members.validation import validate_key
from server.cache import TTLCache
from server.errors import invalid

CACHE_SECONDS = 5.0
LOOKBACK = timedelta(days=31)  # late events are accepted up to 7 days back
MAX_MULTIPLIER = Decimal("100")
MAX_EVENT_TYPES = 50
ONE = Decimal(1)


@dataclass(frozen=True)
class CampaignInput:
    key: str
    name: str
    multiplier: float
    starts_at: datetime
    ends_at: datetime
    event_types: tuple[str, ...] = ()
    min_tier: str | None = None  # a tier key


@dataclass(frozen=True)
class CampaignRule:
    """A campaign as the matcher needs it (an immutable, cacheable snapshot)."""

    key: str
    multiplier: Decimal
    starts_at: datetime
    ends_at: datetime
    event_types: frozenset[str]
    min_tier_id: int | None

    def applies(self, event_type: str | None, at: datetime) -> bool:
        if not self.starts_at <= at < self.ends_at:
            return False
        return not self.event_types or event_type in self.event_types


def _aware(moment: datetime) -> datetime:
    """A naive timestamp is read as UTC (as everywhere in the API)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _validate_name(name: str) -> str:
    if not name.strip() or len(name) > 255:
        raise invalid("name must be 1 to 255 characters", "name")
    return name.strip()


def _validate_multiplier(value: float) -> Decimal:
    if not math.isfinite(value):
        raise invalid("multiplier must be a number", "multiplier")
    multiplier = Decimal(str(value)).quantize(Decimal("0.001"))
    if not Decimal(0) < multiplier <= MAX_MULTIPLIER:
        raise invalid(f"multiplier must be above 0 and at most {MAX_MULTIPLIER}", "multiplier")
    return multiplier


def _validate_event_types(event_types: Sequence[str]) -> list[str]:
    if len(event_types) > MAX_EVENT_TYPES:
        raise invalid(f"at most {MAX_EVENT_TYPES} eventTypes", "eventTypes")
    for event_type in event_types:
        if not event_type or len(event_type) > 64 or any(c.isspace() for c in event_type):
            raise invalid("each event type is 1 to 64 characters, without spaces", "eventTypes")
    return sorted(set(event_types))


async def upsert_campaign(session: AsyncSession, data: CampaignInput) -> Campaign:
    validate_key(data.key)
    starts_at, ends_at = _aware(data.starts_at), _aware(data.ends_at)
    if ends_at <= starts_at:
        raise invalid("endsAt must be after startsAt", "endsAt")
    values = {
        "name": _validate_name(data.name),
        "multiplier": _validate_multiplier(data.multiplier),
        "starts_at": starts_at,
        "ends_at": ends_at,
        "event_types": _validate_event_types(data.event_types),
        "min_tier_id": (
            (await require_tier(session, data.min_tier, "minTier")).id if data.min_tier else None
        ),
        "updated_at": text("now()"),
    }
    campaign_id = await session.scalar(
        insert(Campaign)
        .values(key=data.key, **values)
        .on_conflict_do_update(index_elements=[Campaign.key], set_=values)
        .returning(Campaign.id)
    )
    _rules_cache.clear()
    return await session.get_one(Campaign, campaign_id, populate_existing=True)


async def list_campaigns(
    session: AsyncSession, *, active_at: datetime | None = None
) -> list[Campaign]:
    """Every campaign, soonest start first; with ``active_at``, only those running then."""
    query = select(Campaign).order_by(Campaign.starts_at, Campaign.key)
    if active_at is not None:
        moment = _aware(active_at)
        query = query.where(Campaign.starts_at <= moment, Campaign.ends_at > moment)
    return list(await session.scalars(query))


def _rule(campaign: Campaign) -> CampaignRule:
    return CampaignRule(
        key=campaign.key,
        multiplier=Decimal(campaign.multiplier),
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        event_types=frozenset(campaign.event_types),
        min_tier_id=campaign.min_tier_id,
    )


async def _load_rules(session: AsyncSession, ending_after: datetime) -> tuple[CampaignRule, ...]:
    rows = await session.scalars(select(Campaign).where(Campaign.ends_at > ending_after))
    return tuple(_rule(campaign) for campaign in rows)


# (horizon, rules): every campaign that ends after ``horizon``.
_rules_cache: TTLCache[str, tuple[datetime, tuple[CampaignRule, ...]]] = TTLCache(
    seconds=CACHE_SECONDS
)


async def _rules_for(session: AsyncSession, at: datetime) -> tuple[CampaignRule, ...]:
    cached = _rules_cache.get("rules")
    if cached is None:
        horizon = datetime.now(UTC) - LOOKBACK
        cached = _rules_cache.put("rules", (horizon, await _load_rules(session, horizon)))
    horizon, rules = cached
    if at >= horizon:
        return rules
    return await _load_rules(session, at)  # older than the cache covers: ask the database


async def matching_campaigns(
    session: AsyncSession, *, event_type: str | None, tier_rank: int | None, at: datetime
) -> list[CampaignRule]:
    """The campaigns that apply to an event of ``event_type`` at ``at`` for a member of a tier
    ranked ``tier_rank`` (None: no tier)."""
    at = _aware(at)
    candidates = [rule for rule in await _rules_for(session, at) if rule.applies(event_type, at)]
    if not any(rule.min_tier_id is not None for rule in candidates):
        return candidates
    ranks = {tier.id: tier.rank for tier in await list_tiers(session)}
    return _tier_allows(candidates, tier_rank, ranks)


def _tier_allows(
    candidates: list[CampaignRule], tier_rank: int | None, ranks: dict[int, int]
) -> list[CampaignRule]:
    return [
        rule
        for rule in candidates
        if rule.min_tier_id is None
        or (
            tier_rank is not None
            and rule.min_tier_id in ranks
            and tier_rank >= ranks[rule.min_tier_id]
        )
    ]


def cached_campaign_multiplier(
    *, event_type: str | None, tier_rank: int | None, at: datetime
) -> Decimal | None:
    """:func:`campaign_multiplier` from this process's caches alone (no session): None when
    they do not hold what it needs (the campaigns, or the tiers a campaign's minimum needs)."""
    cached = _rules_cache.get("rules")
    at = _aware(at)
    if cached is None or at < cached[0]:
        return None
    candidates = [rule for rule in cached[1] if rule.applies(event_type, at)]
    if any(rule.min_tier_id is not None for rule in candidates):
        tiers = cached_tiers()
        if tiers is None:
            return None
        candidates = _tier_allows(candidates, tier_rank, {t.id: t.rank for t in tiers})
    return _product(candidates)


async def campaign_multiplier(
    session: AsyncSession, *, event_type: str | None, tier_rank: int | None, at: datetime
) -> Decimal:
    """The product of the multipliers of every campaign matching the event (1 when none).
    Do not round it: see the stacking rule in the module docstring."""
    rules = await matching_campaigns(session, event_type=event_type, tier_rank=tier_rank, at=at)
    return _product(rules)


def _product(rules: list[CampaignRule]) -> Decimal:
    return math.prod((rule.multiplier for rule in rules), start=ONE)
