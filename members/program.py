"""Program settings: the rules admins change at run time (``configureProgram``).

One row (``id = 1``), written by the first ``configureProgram``; until then the defaults of
``Program`` apply. Reads go through a
short per-process cache because every event consults them; an admin's change is visible to
every API process within ``CACHE_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import ProgramSettingsRow
from members.validation import validate_timezone
from server.cache import TTLCache
from server.errors import invalid

CACHE_SECONDS = 5.0
MAX_DAYS = 36_500
MAX_POINTS = 1_000_000_000


@dataclass(frozen=True)
class Program:
    """An immutable snapshot of the program settings."""

    timezone: str = "UTC"
    welcome_points: int = 0
    birthday_points: int = 0
    points_lifetime_days: int | None = 365
    pending_days: int = 0
    referrer_reward: int = 0
    referee_reward: int = 0
    referral_qualifying_event: str | None = "purchase"
    max_referral_rewards_per_month: int | None = None
    new_member_days: int = 7
    retained_days: int = 90
    loyal_days: int = 365
    at_risk_days: int = 15
    lapsed_days: int = 60


PROGRAM_FIELDS = tuple(f.name for f in fields(Program))
NULLABLE_FIELDS = {
    "points_lifetime_days",
    "referral_qualifying_event",
    "max_referral_rewards_per_month",
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_cache: TTLCache[str, Program] = TTLCache(seconds=CACHE_SECONDS)


def _from_row(row: ProgramSettingsRow) -> Program:
    return Program(**{name: getattr(row, name) for name in PROGRAM_FIELDS})


def cached_program() -> Program | None:
    """The program settings if this process read them within the cache's TTL."""
    return _cache.get("program")


async def get_program(session: AsyncSession, *, fresh: bool = False) -> Program:
    cached = None if fresh else _cache.get("program")
    if cached is not None:
        return cached
    row = await session.scalar(select(ProgramSettingsRow).where(ProgramSettingsRow.id == 1))
    return _cache.put("program", _from_row(row) if row is not None else Program())


def _check_range(name: str, value: int | None, maximum: int) -> None:
    if value is not None and not 0 <= value <= maximum:
        raise invalid(f"{camel(name)} must be between 0 and {maximum}", camel(name))


async def configure_program(session: AsyncSession, changes: dict[str, object]) -> Program:
    """Apply ``changes`` (field name → value; absent fields keep their value)."""
    unknown = set(changes) - set(PROGRAM_FIELDS)
    if unknown:
        raise invalid(f"unknown program settings: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if value is None and name not in NULLABLE_FIELDS:
            raise invalid(f"{camel(name)} cannot be null", camel(name))
    current = await get_program(session, fresh=True)
    merged = Program(**{**current.__dict__, **changes})
    validate_timezone(merged.timezone)
    for name in ("welcome_points", "birthday_points", "referrer_reward", "referee_reward"):
        _check_range(name, getattr(merged, name), MAX_POINTS)
    if merged.points_lifetime_days == 0:
        raise invalid(
            "pointsLifetimeDays must be at least 1 (or null: never expire)", "pointsLifetimeDays"
        )
    day_fields = (
        "points_lifetime_days",
        "pending_days",
        "new_member_days",
        "retained_days",
        "loyal_days",
        "at_risk_days",
        "lapsed_days",
        "max_referral_rewards_per_month",
    )
    for name in day_fields:
        _check_range(name, getattr(merged, name), MAX_DAYS)
    if merged.at_risk_days >= merged.lapsed_days:
        raise invalid("atRiskDays must be smaller than lapsedDays", "atRiskDays")
    values = {**merged.__dict__, "updated_at": func.now()}
    await session.execute(
        insert(ProgramSettingsRow)
        .values(id=1, **values)
        .on_conflict_do_update(index_elements=[ProgramSettingsRow.id], set_=values)
    )
    _cache.clear()
    return merged
