"""Tier upgrades on the crossing posting, retention at window end, multiplier rounding."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update

from members.models import Member, Tier, TierChange
from members.tasks import run_evaluate_tiers
from members.tiers import apply_multiplier
from server.runtime import Runtime
from tests.members.helpers import earn_xp, make_ladder, make_member


async def tier_of(runtime: Runtime, member_id: int) -> str | None:
    async with runtime.sessionmaker() as session:
        return await session.scalar(
            select(Tier.key).join(Member, Member.tier_id == Tier.id).where(Member.id == member_id)
        )


async def changes_of(runtime: Runtime, member_id: int) -> list[tuple[str, int]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            select(TierChange.reason, TierChange.xp_in_window)
            .where(TierChange.member_id == member_id)
            .order_by(TierChange.id)
        )
        return [(r.reason, r.xp_in_window) for r in rows]


async def test_new_member_starts_at_base_tier(runtime: Runtime) -> None:
    await make_ladder(runtime)
    member_id = await make_member(runtime, "newbie")
    assert await tier_of(runtime, member_id) == "member"


async def test_upgrade_happens_on_the_posting_that_crosses(runtime: Runtime) -> None:
    await make_ladder(runtime)
    member_id = await make_member(runtime, "climber")
    now = datetime.now(UTC)
    await earn_xp(runtime, member_id, 499, "xp-1", now)
    assert await tier_of(runtime, member_id) == "member"
    await earn_xp(runtime, member_id, 1, "xp-2", now)  # 500: exactly the threshold
    assert await tier_of(runtime, member_id) == "silver"
    await earn_xp(runtime, member_id, 5000, "xp-3", now)  # straight past gold
    assert await tier_of(runtime, member_id) == "gold"
    assert await changes_of(runtime, member_id) == [
        ("upgrade", 0),
        ("upgrade", 500),
        ("upgrade", 5500),
    ]


async def test_xp_outside_the_window_does_not_count(runtime: Runtime) -> None:
    await make_ladder(runtime)
    member_id = await make_member(runtime, "old-timer")
    await earn_xp(runtime, member_id, 400, "old-xp", datetime.now(UTC))
    async with runtime.transaction() as session:  # that xp was earned 400 days ago
        await session.execute(
            text("UPDATE postings SET created_at = now() - interval '400 days' WHERE currency='xp'")
        )
    await earn_xp(runtime, member_id, 200, "new-xp", datetime.now(UTC))
    assert await tier_of(runtime, member_id) == "member"  # 200 in the window, not 600


async def _end_window(runtime: Runtime, member_id: int, days_ago: int) -> datetime:
    """Pretend the member reached their tier ``days_ago`` days ago (and earned it then)."""
    since = datetime.now(UTC) - timedelta(days=days_ago)
    async with runtime.transaction() as session:
        await session.execute(update(Member).where(Member.id == member_id).values(tier_since=since))
        await session.execute(
            text("UPDATE postings SET created_at = :t WHERE currency = 'xp'"), {"t": since}
        )
    return since


async def test_retention_downgrades_exactly_one_tier(runtime: Runtime) -> None:
    await make_ladder(runtime)
    member_id = await make_member(runtime, "lapsing")
    await earn_xp(runtime, member_id, 2500, "xp-gold", datetime.now(UTC))
    assert await tier_of(runtime, member_id) == "gold"
    since = await _end_window(runtime, member_id, days_ago=400)
    async with runtime.transaction() as session:  # only 100 xp inside the ended window
        await session.execute(
            text("UPDATE postings SET created_at = :t WHERE currency = 'xp'"),
            {"t": since - timedelta(days=1)},
        )
    await earn_xp(runtime, member_id, 100, "xp-small", since + timedelta(days=10))
    async with runtime.transaction() as session:
        await session.execute(
            text("UPDATE postings SET created_at = :t WHERE amount = 100 AND currency = 'xp'"),
            {"t": since + timedelta(days=10)},
        )
    now = datetime.now(UTC)
    result = await run_evaluate_tiers(runtime, now)
    assert result == {"handled": 1, "downgraded": 1}
    assert await tier_of(runtime, member_id) == "silver"  # gold → silver, not → member
    again = await run_evaluate_tiers(runtime, now)  # idempotent: the new window has not ended
    assert again == {"handled": 0, "downgraded": 0}
    assert (await changes_of(runtime, member_id))[-1] == ("retention", 100)


async def test_retention_met_keeps_the_tier(runtime: Runtime) -> None:
    await make_ladder(runtime)
    member_id = await make_member(runtime, "steady")
    await earn_xp(runtime, member_id, 2500, "xp-gold", datetime.now(UTC))
    since = await _end_window(runtime, member_id, days_ago=366)
    results = await asyncio.gather(
        run_evaluate_tiers(runtime, datetime.now(UTC)),
        run_evaluate_tiers(runtime, datetime.now(UTC)),
    )
    assert sum(r["handled"] for r in results) == 1  # two concurrent runs: handled once
    assert sum(r["downgraded"] for r in results) == 0
    assert await tier_of(runtime, member_id) == "gold"
    async with runtime.sessionmaker() as session:
        renewed = await session.scalar(select(Member.tier_since).where(Member.id == member_id))
    assert renewed == since + timedelta(days=365)  # the next window starts where this ended


async def test_base_tier_is_the_floor(runtime: Runtime) -> None:
    await make_ladder(runtime)
    async with runtime.transaction() as session:
        await session.execute(text("UPDATE tiers SET retention_xp = 10 WHERE key = 'member'"))
    member_id = await make_member(runtime, "floor")
    await _end_window(runtime, member_id, days_ago=400)
    await run_evaluate_tiers(runtime, datetime.now(UTC))
    assert await tier_of(runtime, member_id) == "member"


def test_multiplier_rounds_down() -> None:
    assert apply_multiplier(15, 1.25) == 18  # 18.75
    assert apply_multiplier(10, 1.5) == 15
    assert apply_multiplier(1, 1.5) == 1  # 1.5
    assert apply_multiplier(3, 0.333) == 0  # 0.999: never rounds up into value
    assert apply_multiplier(1_000_000_000, 1.001) == 1_001_000_000


async def test_member_sees_tier_progress_and_history(runtime: Runtime, api: object) -> None:
    from tests.api import GraphQLClient

    assert isinstance(api, GraphQLClient)
    await make_ladder(runtime)
    member_id = await make_member(runtime, "viewer")
    await earn_xp(runtime, member_id, 600, "xp-view", datetime.now(UTC))
    query = """{ me { tier { key pointsMultiplier }
      tierProgress { xpInWindow xpNeeded current { key } next { key } }
      tierHistory { fromTier { key } toTier { key } reason xpInWindow } } }"""
    me = (await api.as_member("viewer", query)).data["me"]
    assert me["tier"] == {"key": "silver", "pointsMultiplier": 1.25}
    assert me["tierProgress"] == {
        "xpInWindow": 600,
        "xpNeeded": 1400,
        "current": {"key": "silver"},
        "next": {"key": "gold"},
    }
    assert me["tierHistory"] == [
        {
            "fromTier": {"key": "member"},
            "toTier": {"key": "silver"},
            "reason": "upgrade",
            "xpInWindow": 600,
        },
        {"fromTier": None, "toTier": {"key": "member"}, "reason": "upgrade", "xpInWindow": 0},
    ]


async def test_admin_xp_grant_upgrades_tier(runtime: Runtime, api: object) -> None:
    from tests.api import GraphQLClient

    assert isinstance(api, GraphQLClient)
    await make_ladder(runtime)
    await make_member(runtime, "granted")
    result = await api.admin(
        """mutation { grantPoints(input: {externalId: "granted", amount: 600, currency: "xp",
             reason: "migration", idempotencyKey: "xp-import-1"}) { errors { code } } }"""
    )
    assert result.data["grantPoints"]["errors"] == []
    me = await api.as_member("granted", '{ me { tier { key } balance(currency: "xp") } }')
    assert me.data["me"] == {"tier": {"key": "silver"}, "balance": 600}
