"""The demo program that ``questline dev`` loads into an empty database (``seed-demo``).

A small, believable coffee-shop loyalty program to click through in GraphiQL. Seeding is
idempotent: every step looks its rows up by their natural key (externalId, key, idempotency
key) and creates only what is missing, so running it twice creates nothing twice.

One small function per domain, listed in ``SEEDERS`` in dependency order; a domain that lands
adds its own (tiers, quests, badges and titles, catalogue, ...).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.runtime import Runtime


@dataclass(frozen=True)
class DemoMember:
    external_id: str
    display_name: str
    birthday: date | None = None
    timezone: str | None = None
    referred_by: str | None = None  # externalId of the member whose code they used


DEMO_MEMBERS: tuple[DemoMember, ...] = (
    DemoMember("alice", "Alice Martin", date(1991, 4, 12), "Europe/Paris"),
    DemoMember("bob", "Bob Okafor", date(1987, 11, 3), "Africa/Lagos", referred_by="alice"),
    DemoMember("chloe", "Chloé Dubois", date(1996, 7, 21), "Europe/Paris"),
    DemoMember("diego", "Diego Alvarez", None, "America/Mexico_City", referred_by="alice"),
    DemoMember("emma", "Emma Schmidt", date(2000, 1, 30), "Europe/Berlin"),
    DemoMember("farid", "Farid Haddad", None, None),
)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


async def seed_members(session: AsyncSession) -> int:
    """Register the demo members (referrers first); return how many were created."""
    from members.service import get_member_by_external_id, register_member

    created = 0
    for demo in DEMO_MEMBERS:
        referral_code = None
        if demo.referred_by:
            referrer = await get_member_by_external_id(session, demo.referred_by)
            referral_code = referrer.referral_code if referrer else None
        registration = await register_member(
            session,
            external_id=demo.external_id,
            display_name=demo.display_name,
            birthday=demo.birthday,
            timezone=demo.timezone,
            referral_code=referral_code,
        )
        created += int(registration.created)
    return created


@dataclass(frozen=True)
class DemoTier:
    key: str
    name: str
    rank: int
    xp_threshold: int
    points_multiplier: float
    retention_xp: int | None
    benefits: tuple[str, ...]


# A table, one tier a row: kept as written.
# fmt: off
DEMO_TIERS: tuple[DemoTier, ...] = (
    DemoTier("bronze", "Bronze", 0, 0, 1.0, None, ("Birthday drink",)),
    DemoTier("silver", "Silver", 1, 1_000, 1.25, 500,
             ("Birthday drink", "Free oat milk", "25% more points")),
    DemoTier("gold", "Gold", 2, 5_000, 1.5, 2_500,
             ("Birthday drink", "Free oat milk", "50% more points", "Members-only tastings")),
)
# fmt: on


async def seed_tiers(session: AsyncSession) -> int:
    """Bronze, Silver and Gold; tiers that already exist (maybe edited by an admin) are kept."""
    if not _module_exists("members.tiers"):
        return 0
    from members.tiers import TierInput, list_tiers, upsert_tier

    existing = {tier.key for tier in await list_tiers(session)}
    created = 0
    for demo in DEMO_TIERS:
        if demo.key in existing:
            continue
        await upsert_tier(
            session,
            TierInput(
                key=demo.key,
                name=demo.name,
                rank=demo.rank,
                xp_threshold=demo.xp_threshold,
                points_multiplier=demo.points_multiplier,
                retention_xp=demo.retention_xp,
                benefits=demo.benefits,
            ),
        )
        created += 1
    return created


@dataclass(frozen=True)
class DemoGrant:
    external_id: str
    amount: int
    currency: str
    memo: str


# Opening balances: what a few weeks of coffee would have earned (xp mirrors points earned).
DEMO_GRANTS: tuple[DemoGrant, ...] = (
    DemoGrant("alice", 1_250, "points", "Purchases, first weeks"),
    DemoGrant("alice", 1_250, "xp", "Purchases, first weeks"),
    DemoGrant("bob", 430, "points", "Purchases, first weeks"),
    DemoGrant("bob", 430, "xp", "Purchases, first weeks"),
    DemoGrant("chloe", 2_800, "points", "Purchases, first weeks"),
    DemoGrant("chloe", 2_800, "xp", "Purchases, first weeks"),
    DemoGrant("diego", 90, "points", "Purchases, first weeks"),
    DemoGrant("diego", 90, "xp", "Purchases, first weeks"),
    DemoGrant("emma", 5_200, "points", "Purchases, first weeks"),
    DemoGrant("emma", 5_200, "xp", "Purchases, first weeks"),
)
DEMO_POINTS_LIFETIME_DAYS = 365


async def seed_ledger(session: AsyncSession) -> int:
    """Opening balances through the ledger. Each grant has a fixed idempotency key (and a
    lifetime in days rather than a date), so a second run replays instead of granting."""
    if not _module_exists("ledger.service"):
        return 0
    from ledger.service import grant
    from members.service import get_member_by_external_id

    created = 0
    for demo in DEMO_GRANTS:
        member = await get_member_by_external_id(session, demo.external_id)
        if member is None:
            continue
        posted = await grant(
            session,
            member.id,
            demo.amount,
            idempotency_key=f"demo:opening:{demo.external_id}:{demo.currency}",
            currency=demo.currency,
            memo=demo.memo,
            lifetime_days=DEMO_POINTS_LIFETIME_DAYS if demo.currency == "points" else None,
        )
        created += int(not posted.replayed)
    return created


DEMO_BADGES: tuple[tuple[str, str, str, int, bool], ...] = (
    ("coffee-lover", "Coffee Lover", "Bronze at 10 coffees, silver at 50, gold at 200", 3, False),
    ("early-bird", "Early Bird", "A coffee before 8 am", 1, False),
    ("night-owl", "Night Owl", "You found the midnight menu", 1, True),
)
DEMO_TITLES: tuple[tuple[str, str, int | None], ...] = (
    ("chief-experience-officer", "Chief Experience Officer", 1),
    ("regular", "Regular", None),
)
# (externalId, badge key, level) and (externalId, title key): what the demo members earned.
DEMO_BADGE_AWARDS = (
    ("alice", "coffee-lover", 2),
    ("chloe", "coffee-lover", 3),
    ("emma", "night-owl", 1),
)
DEMO_TITLE_GRANTS = (("emma", "chief-experience-officer"), ("alice", "regular"))


async def seed_badges(session: AsyncSession) -> int:
    """Badges (one leveled, one secret), titles (a single-seat CXO) and a few of each held."""
    if not _module_exists("badges.service"):
        return 0
    from badges.models import Badge, Title
    from badges.service import BadgeInput, award_badge, upsert_badge
    from badges.titles import TitleInput, grant_title, upsert_title
    from members.service import get_member_by_external_id

    now = datetime.now(UTC)
    created = 0
    badges = set(await session.scalars(select(Badge.key)))
    for key, name, description, levels, secret in DEMO_BADGES:
        if key not in badges:
            await upsert_badge(session, BadgeInput(key, name, description, None, levels, secret))
            created += 1
    titles = set(await session.scalars(select(Title.key)))
    for key, name, max_holders in DEMO_TITLES:
        if key not in titles:
            await upsert_title(session, TitleInput(key, name, None, max_holders), now=now)
            created += 1
    for external_id, key, level in DEMO_BADGE_AWARDS:
        member = await get_member_by_external_id(session, external_id)
        if member is not None and await award_badge(session, member.id, key, level, now=now):
            created += 1
    for external_id, key in DEMO_TITLE_GRANTS:
        member = await get_member_by_external_id(session, external_id)
        if member is not None and await grant_title(session, member.id, key, now=now):
            created += 1
    return created


async def seed_campaigns(session: AsyncSession) -> int:
    """A double points weekend: the coming Saturday and Sunday (UTC)."""
    if not _module_exists("campaigns.service"):
        return 0
    from campaigns.models import Campaign
    from campaigns.service import CampaignInput, upsert_campaign

    if await session.scalar(select(exists().where(Campaign.key == "double-points-weekend"))):
        return 0
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    saturday = today + timedelta(days=(5 - today.weekday()) % 7)
    weekend = CampaignInput(
        "double-points-weekend", "Double points weekend", 2.0, saturday, saturday + timedelta(2)
    )
    await upsert_campaign(session, weekend)
    return 1


DEMO_CATALOG: tuple[dict[str, Any], ...] = (
    {"key": "free-coffee", "name": "Free coffee", "cost": 500, "description": "Any size."},
    {
        "key": "questline-mug",
        "name": "Questline mug",
        "cost": 1_200,
        "stock": 25,
        "set_stock": True,
        "per_member_limit": 2,
        "description": "Stoneware, 350 ml.",
    },
    {
        "key": "pastry-coupon",
        "name": "Pastry of the day",
        "cost": 300,
        "kind": "COUPON",
        "codes": tuple(f"PASTRY-{n:04d}" for n in range(1, 21)),
        "description": "Show the code at the counter.",
    },
    {
        "key": "gold-tasting",
        "name": "Members-only tasting",
        "cost": 2_000,
        "min_tier": "gold",
        "stock": 12,
        "set_stock": True,
        "description": "A single-origin flight with the roaster.",
    },
    {
        "key": "farm-trip-raffle",
        "name": "Raffle: a trip to the coffee farm",
        "cost": 100,
        "kind": "LOTTERY",
        "per_member_limit": 10,
        "description": "One ticket per 100 points.",
    },
)
# (externalId, item key, quantity): redemptions the demo members already made.
DEMO_REDEMPTIONS = (("chloe", "free-coffee", 1), ("emma", "farm-trip-raffle", 3))


async def seed_catalog(session: AsyncSession) -> int:
    """A small catalogue (a reward, a limited mug, a coupon pool, a gold-only item, a
    raffle) and a couple of redemptions, which replay by idempotency key on a re-run."""
    if not _module_exists("redemptions.service"):
        return 0
    from members.models import Tier
    from redemptions.catalog import CatalogItemInput, upsert_item
    from redemptions.models import CatalogItem
    from redemptions.service import redeem
    from server.errors import DomainError

    created = 0
    existing = set(await session.scalars(select(CatalogItem.key)))
    tiers = set(await session.scalars(select(Tier.key)))
    for fields in DEMO_CATALOG:
        if fields["key"] in existing or fields.get("min_tier", "bronze") not in tiers | {"bronze"}:
            continue
        await upsert_item(session, CatalogItemInput(**fields))
        created += 1
    for external_id, key, quantity in DEMO_REDEMPTIONS:
        try:
            async with session.begin_nested():  # a refusal (e.g. no points) skips this one only
                outcome = await redeem(
                    session,
                    external_id=external_id,
                    item_key=key,
                    quantity=quantity,
                    idempotency_key=f"demo:{key}",
                )
            created += int(not outcome.replayed)
        except DomainError:
            continue
    return created


# (key, name, metric, event type, period, prizes as (rank, toRank, amount, currency))
DEMO_LEADERBOARDS: tuple[tuple[str, str, str, str | None, str, tuple[Any, ...]], ...] = (
    ("weekly-points", "Top earners this week", "POINTS_EARNED", None, "WEEKLY",
     ((1, 1, 500, "points"), (2, 3, 200, "points"))),
    ("daily-coffee", "Coffee of the day", "EVENT_COUNT", "purchase", "DAILY", ()),
    ("all-time-xp", "Hall of fame", "XP_EARNED", None, "ALL_TIME", ()),
)  # fmt: skip


async def seed_leaderboards(session: AsyncSession) -> int:
    """A weekly points board with prizes, a daily purchase count, an all-time xp board. A new
    board is built from the ledger by a worker once committed (and by live updates)."""
    if not _module_exists("leaderboards.service"):
        return 0
    from leaderboards.models import Leaderboard
    from leaderboards.service import BoardInput, RewardRule, upsert_board

    existing = set(await session.scalars(select(Leaderboard.key)))
    created = 0
    for key, name, metric, event_type, period, prizes in DEMO_LEADERBOARDS:
        if key in existing:
            continue
        rewards = tuple(RewardRule(*prize) for prize in prizes)
        board = BoardInput(key, name, metric, period, event_type=event_type, rewards=rewards)
        await upsert_board(session, board)
        created += 1
    return created


Seeder = Callable[[AsyncSession], Awaitable[int]]

SEEDERS: list[tuple[str, Seeder]] = [
    ("tiers", seed_tiers),
    ("members", seed_members),
    ("ledger", seed_ledger),
    ("badges", seed_badges),
    ("campaigns", seed_campaigns),
    ("catalogue", seed_catalog),
    ("leaderboards", seed_leaderboards),
]


async def database_is_empty(runtime: Runtime) -> bool:
    """True when nobody has been registered yet (a fresh database)."""
    from members.models import Member

    async with runtime.sessionmaker() as session:
        return not await session.scalar(select(exists().where(Member.id.is_not(None))))


async def seed_demo(runtime: Runtime) -> dict[str, int]:
    """Run every seeder in one transaction; return what each one created."""
    report: dict[str, int] = {}
    async with runtime.transaction() as session:
        for name, seeder in SEEDERS:
            report[name] = await seeder(session)
    return report
