"""Quest definitions: validation on save, and a per-process index by event type.

Matching an event never scans every quest: the index maps an event type to the (few) active
quests listening for it. It is cached per process for a few seconds and cleared in the
process that saves a quest, so an edit reaches every API process within the TTL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Tier
from members.validation import validate_key
from quests.filters import PROPERTY_PATTERN, validate_filter
from quests.models import Quest
from quests.periods import CADENCES
from server.cache import TTLCache
from server.errors import invalid, not_found

AGGREGATES = ("COUNT", "SUM", "DISTINCT_DAYS", "STREAK_DAYS")
REWARD_KINDS = ("POINTS", "XP", "BADGE", "TITLE")
MAX_AMOUNT = 1_000_000_000
MAX_REWARDS = 10
EVENT_TYPE_PATTERN = PROPERTY_PATTERN


@dataclass(frozen=True)
class QuestDef:
    """An immutable snapshot of a quest, as the event pipeline uses it."""

    id: int
    key: str
    name: str
    cadence: str
    event_type: str
    filter: dict[str, Any]
    aggregate: str
    property: str | None
    target: int
    rewards: list[dict[str, Any]]
    starts_at: datetime | None
    ends_at: datetime | None
    min_tier_rank: int | None
    auto_claim: bool
    active: bool = True
    description: str | None = None
    min_tier_key: str | None = field(default=None)

    @cached_property
    def rewards_json(self) -> str:
        """``rewards`` as JSON, encoded once per snapshot (snapshots are cached and shared)."""
        return json.dumps(self.rewards)

    def open_at(self, moment: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= moment) and (
            self.ends_at is None or moment < self.ends_at
        )


def validate_event_type(event_type: str, field_name: str = "eventType") -> str:
    if not EVENT_TYPE_PATTERN.match(event_type or ""):
        raise invalid("eventType must be 1 to 64 letters, digits or _", field_name)
    return event_type


def validate_rewards(rewards: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise rewards to ``{kind, amount, currency, key}``; raise on anything unusable."""
    if not rewards:
        raise invalid("a quest needs at least one reward", "rewards")
    if len(rewards) > MAX_REWARDS:
        raise invalid(f"at most {MAX_REWARDS} rewards", "rewards")
    normalised = []
    for reward in rewards:
        kind = reward.get("kind")
        amount = reward.get("amount")
        key = reward.get("key")
        if kind in ("POINTS", "XP"):
            if not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
                raise invalid(f"a {kind} reward needs an amount from 1 to {MAX_AMOUNT}", "rewards")
            currency = "xp" if kind == "XP" else (reward.get("currency") or "points")
            if kind == "POINTS" and currency == "xp":
                raise invalid("use an XP reward for xp", "rewards")
            normalised.append({"kind": kind, "amount": amount, "currency": currency, "key": None})
        elif kind in ("BADGE", "TITLE"):
            if not isinstance(key, str):
                raise invalid(f"a {kind} reward needs the {kind.lower()} key", "rewards")
            validate_key(key, "rewards")
            level = amount if kind == "BADGE" and amount is not None else 1
            if not isinstance(level, int) or level < 1:
                raise invalid("a badge level is 1 or more", "rewards")
            normalised.append({"kind": kind, "amount": level, "currency": None, "key": key})
        else:
            raise invalid(f"reward kind must be one of {', '.join(REWARD_KINDS)}", "rewards")
    return normalised


@dataclass(frozen=True)
class QuestInput:
    key: str
    name: str
    cadence: str
    event_type: str
    target: int
    rewards: list[dict[str, Any]]
    description: str | None = None
    filter: dict[str, Any] | None = None
    aggregate: str = "COUNT"
    property: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    min_tier: str | None = None
    auto_claim: bool = True
    active: bool = True


async def upsert_quest(session: AsyncSession, data: QuestInput) -> Quest:
    validate_key(data.key)
    if not data.name.strip() or len(data.name) > 255:
        raise invalid("name must be 1 to 255 characters", "name")
    if data.cadence not in CADENCES:
        raise invalid(f"cadence must be one of {', '.join(CADENCES)}", "cadence")
    validate_event_type(data.event_type)
    if data.aggregate not in AGGREGATES:
        raise invalid(f"aggregate must be one of {', '.join(AGGREGATES)}", "aggregate")
    if data.aggregate == "SUM":
        if not data.property or not PROPERTY_PATTERN.match(data.property):
            raise invalid("a SUM quest needs the numeric `property` to add up", "property")
    elif data.property is not None:
        raise invalid("`property` only applies to SUM quests", "property")
    if not 0 < data.target <= MAX_AMOUNT:
        raise invalid(f"target must be between 1 and {MAX_AMOUNT}", "target")
    if data.starts_at and data.ends_at and data.ends_at <= data.starts_at:
        raise invalid("endsAt must be after startsAt", "endsAt")
    event_filter = validate_filter(data.filter)
    rewards = validate_rewards(data.rewards)
    min_tier_id = None
    if data.min_tier is not None:
        min_tier_id = await session.scalar(select(Tier.id).where(Tier.key == data.min_tier))
        if min_tier_id is None:
            raise not_found(f"no tier {data.min_tier!r}", "minTier")
    values = {
        "name": data.name.strip(),
        "description": data.description,
        "cadence": data.cadence,
        "event_type": data.event_type,
        "filter": event_filter,
        "aggregate": data.aggregate,
        "property": data.property,
        "target": data.target,
        "rewards": rewards,
        "starts_at": data.starts_at,
        "ends_at": data.ends_at,
        "min_tier_id": min_tier_id,
        "auto_claim": data.auto_claim,
        "active": data.active,
        "updated_at": text("now()"),
    }
    quest_id = await session.scalar(
        insert(Quest)
        .values(key=data.key, **values)
        .on_conflict_do_update(index_elements=[Quest.key], set_=values)
        .returning(Quest.id)
    )
    _index_cache.clear()
    return await session.get_one(Quest, quest_id, populate_existing=True)


def quest_def_from_model(
    quest: Quest, min_tier_rank: int | None = None, min_tier_key: str | None = None
) -> QuestDef:
    return QuestDef(
        id=quest.id,
        key=quest.key,
        name=quest.name,
        description=quest.description,
        cadence=quest.cadence,
        event_type=quest.event_type,
        filter=quest.filter,
        aggregate=quest.aggregate,
        property=quest.property,
        target=quest.target,
        rewards=quest.rewards,
        starts_at=quest.starts_at,
        ends_at=quest.ends_at,
        min_tier_rank=min_tier_rank,
        min_tier_key=min_tier_key,
        auto_claim=quest.auto_claim,
        active=quest.active,
    )


_index_cache: TTLCache[str, dict[str, list[QuestDef]]] = TTLCache(seconds=5.0)


def cached_quest_index() -> dict[str, list[QuestDef]] | None:
    """The active quests by event type if this process read them within the cache's TTL."""
    return _index_cache.get("index")


async def active_quests_by_event_type(session: AsyncSession) -> dict[str, list[QuestDef]]:
    cached = cached_quest_index()
    if cached is not None:
        return cached
    index: dict[str, list[QuestDef]] = {}
    rows = await session.execute(
        select(Quest, Tier.rank, Tier.key)
        .outerjoin(Tier, Tier.id == Quest.min_tier_id)
        .where(Quest.active)
        .order_by(Quest.id)
    )
    for quest_row, tier_rank, tier_key in rows:
        quest = quest_def_from_model(quest_row, tier_rank, tier_key)
        index.setdefault(quest.event_type, []).append(quest)
    return _index_cache.put("index", index)


async def require_quest(session: AsyncSession, key: str) -> Quest:
    quest = await session.scalar(select(Quest).where(Quest.key == key))
    if quest is None:
        raise not_found(f"no quest {key!r}", "questKey")
    return quest
