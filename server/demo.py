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
from datetime import date

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


async def seed_ledger(session: AsyncSession) -> int:
    """Opening balances, once the ledger exists (its idempotency keys make this repeatable)."""
    if not _module_exists("ledger.service"):
        return 0
    return 0  # filled in when the ledger's grant operation lands


Seeder = Callable[[AsyncSession], Awaitable[int]]

SEEDERS: list[tuple[str, Seeder]] = [
    ("members", seed_members),
    ("ledger", seed_ledger),
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
