"""campaign_multiplier through the service: stacking, the time window, event types, tiers,
the per-process cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from campaigns.service import CampaignInput, campaign_multiplier, upsert_campaign
from members.tiers import apply_multiplier
from server.errors import DomainError
from server.runtime import Runtime
from tests.members.helpers import make_ladder

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=1)
END = NOW + timedelta(days=1)
MEMBER, SILVER, GOLD = 0, 1, 2  # tier ranks of tests.members.helpers.LADDER


async def campaign(runtime: Runtime, key: str, multiplier: float, **fields: object) -> None:
    values: dict[str, object] = {"starts_at": START, "ends_at": END, **fields}
    async with runtime.transaction() as session:
        await upsert_campaign(
            session,
            CampaignInput(key=key, name=key.title(), multiplier=multiplier, **values),  # type: ignore[arg-type]
        )


async def multiplier(
    runtime: Runtime, event_type: str | None = "purchase", rank: int | None = 0, at: datetime = NOW
) -> Decimal:
    async with runtime.sessionmaker() as session:
        return await campaign_multiplier(session, event_type=event_type, tier_rank=rank, at=at)


async def test_no_campaign_is_one(runtime: Runtime) -> None:
    assert await multiplier(runtime) == Decimal(1)


async def test_matching_campaigns_multiply_and_round_once(runtime: Runtime) -> None:
    await campaign(runtime, "double-weekend", 2.0)
    await campaign(runtime, "coffee-week", 1.5, event_types=("purchase",))
    product = await multiplier(runtime)
    assert product == Decimal("3.000000")
    # base 15 for a Silver member (×1.25): floor(15 × 1.25 × 2 × 1.5) = floor(56.25) = 56,
    # where rounding per factor would give floor(floor(18.75 × 2) × 1.5) = 55
    assert apply_multiplier(15, Decimal("1.25") * product) == 56
    assert apply_multiplier(7, Decimal("1.333")) == 9  # 9.331: always down


async def test_time_window_is_start_inclusive_end_exclusive(runtime: Runtime) -> None:
    await campaign(runtime, "flash", 3.0)
    assert await multiplier(runtime, at=START) == 3
    assert await multiplier(runtime, at=END - timedelta(microseconds=1)) == 3
    assert await multiplier(runtime, at=END) == 1
    assert await multiplier(runtime, at=START - timedelta(seconds=1)) == 1
    upcoming = NOW + timedelta(days=3)
    await campaign(runtime, "next-week", 2.0, starts_at=upcoming, ends_at=upcoming + timedelta(2))
    assert await multiplier(runtime) == 3
    assert await multiplier(runtime, at=upcoming) == 2


async def test_a_late_event_gets_the_campaigns_of_its_own_time(runtime: Runtime) -> None:
    long_ago = NOW - timedelta(days=90)  # older than the cache covers
    await campaign(runtime, "spring", 2.0, starts_at=long_ago, ends_at=long_ago + timedelta(1))
    await campaign(runtime, "flash", 3.0)
    assert await multiplier(runtime) == 3
    assert await multiplier(runtime, at=long_ago + timedelta(hours=1)) == 2
    assert await multiplier(runtime, at=NOW - timedelta(days=5)) == 1


async def test_event_types_limit_a_campaign(runtime: Runtime) -> None:
    await campaign(runtime, "reviews", 2.0, event_types=("review", "photo_review"))
    assert await multiplier(runtime, "review") == 2
    assert await multiplier(runtime, "photo_review") == 2
    assert await multiplier(runtime, "purchase") == 1
    assert await multiplier(runtime, None) == 1  # a reward not tied to an event type


async def test_min_tier_means_that_rank_or_higher(runtime: Runtime) -> None:
    await make_ladder(runtime)
    await campaign(runtime, "silver-plus", 1.5, min_tier="silver")
    await campaign(runtime, "everyone", 2.0)
    assert await multiplier(runtime, rank=None) == 2
    assert await multiplier(runtime, rank=MEMBER) == 2
    assert await multiplier(runtime, rank=SILVER) == 3
    assert await multiplier(runtime, rank=GOLD) == 3


async def test_an_upsert_is_seen_at_once_in_this_process(runtime: Runtime) -> None:
    await campaign(runtime, "weekend", 2.0)
    assert await multiplier(runtime) == 2  # now cached
    await campaign(runtime, "weekend", 2.5)
    assert await multiplier(runtime) == Decimal("2.5")
    await campaign(runtime, "weekend", 2.5, ends_at=NOW)  # ended early
    assert await multiplier(runtime) == 1


async def test_campaign_validation(runtime: Runtime) -> None:
    await make_ladder(runtime)
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"multiplier": 0}, "INVALID_INPUT", "multiplier"),
        ({"multiplier": -2}, "INVALID_INPUT", "multiplier"),
        ({"multiplier": 100.5}, "INVALID_INPUT", "multiplier"),
        ({"multiplier": 0.0004}, "INVALID_INPUT", "multiplier"),  # rounds to 0.000
        ({"multiplier": float("nan")}, "INVALID_INPUT", "multiplier"),
        ({"ends_at": START}, "INVALID_INPUT", "endsAt"),
        ({"ends_at": START - timedelta(days=1)}, "INVALID_INPUT", "endsAt"),
        ({"min_tier": "platinum"}, "NOT_FOUND", "minTier"),
        ({"key": "Double Points"}, "INVALID_INPUT", "key"),
        ({"name": "  "}, "INVALID_INPUT", "name"),
        ({"event_types": ("",)}, "INVALID_INPUT", "eventTypes"),
        ({"event_types": ("two words",)}, "INVALID_INPUT", "eventTypes"),
    ]
    for fields, code, field in cases:
        values: dict[str, object] = {
            "key": "weekend",
            "name": "Weekend",
            "multiplier": 2.0,
            "starts_at": START,
            "ends_at": END,
            **fields,
        }
        with pytest.raises(DomainError) as caught:
            async with runtime.transaction() as session:
                await upsert_campaign(session, CampaignInput(**values))  # type: ignore[arg-type]
        assert (caught.value.code, caught.value.field) == (code, field), fields
    assert await multiplier(runtime) == 1
    await campaign(runtime, "max", 100.0)
    assert await multiplier(runtime) == 100
