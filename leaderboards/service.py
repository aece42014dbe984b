"""Leaderboards: definitions, reading standings, hidden members.

What a board counts (the contract that live updates and ``rebuild`` share)
--------------------------------------------------------------------------
* ``POINTS_EARNED`` / ``XP_EARNED``: every credit of a member's *available* account in
  ``points`` / ``xp`` whose counter-posting debits that currency's ``system:issuance`` account.
  That is exactly what ``ledger.grant`` and ``ledger.post_batch`` write, and exactly the credits
  the ``points.credited`` signal announces: quest and check-in rewards, welcome, birthday and
  referral rewards, admin ``grantPoints``, imports, leaderboard prizes. The credit's time is
  its transaction's ``created_at``.
  Not counted: pending credits (neither when credited nor when they vest: the ledger announces
  neither), transfers between members, money coming back by the reversal of a spend or a
  deduction (returned, not earned). Boards count *gross* earnings: a reversal or an expiry
  does not lower a score.
* ``EVENT_COUNT``: every stored event of the board's ``eventType`` (stored once per member and
  idempotency key, so a replay never counts twice), at its ``occurredAt`` (when the member did
  it, as quests use it; a late report lands in the period it happened in, as long as that
  period's key still lives, see ``GRACE``).
* A fact belongs to the period that contains its time, in the program timezone (``Program.
  timezone``); a timezone change applies to facts from then on (``rebuild`` re-derives all).
* Members whose status is ``suspended`` keep their score but are hidden: left out of every
  listing and of the ranks of everyone else, live and archived, and back when reactivated.

Keys of finished periods expire ``GRACE`` after the period ends; ``close_period`` archives
the final standings to PostgreSQL before that, and closed periods are read from the archive.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from leaderboards import clock, keys, store
from leaderboards.models import Leaderboard, LeaderboardPeriod
from leaderboards.periods import PERIOD_KINDS, Period, parse_period, period_at
from ledger.models import Currency
from members.models import Member
from members.program import get_program
from quests.definitions import validate_event_type
from server import public_cache
from server.cache import TTLCache
from server.errors import DomainError, ErrorCode, invalid, not_found
from server.runtime import Runtime

log = structlog.get_logger("questline.leaderboards")

POINTS_EARNED, XP_EARNED, EVENT_COUNT = "POINTS_EARNED", "XP_EARNED", "EVENT_COUNT"
METRICS = (POINTS_EARNED, XP_EARNED, EVENT_COUNT)
CURRENCY_OF_METRIC = {POINTS_EARNED: "points", XP_EARNED: "xp"}
METRIC_OF_CURRENCY = {currency: metric for metric, currency in CURRENCY_OF_METRIC.items()}

# A finished period's key lives this long after the period ends (late events, a late close).
GRACE = timedelta(days=2)
CACHE_SECONDS = 5.0
MAX_FIRST = 100
MAX_REWARD_RANK = 1000
MAX_AMOUNT = 1_000_000_000
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
HIDDEN_STATUS = "suspended"


class LeaderboardsUnavailable(Exception):
    """Redis cannot be reached: standings cannot be read right now."""


@dataclass(frozen=True)
class RewardRule:
    """Ranks ``rank``..``to_rank`` (inclusive) of a closed period each get ``amount``."""

    rank: int
    to_rank: int
    amount: int
    currency: str = "points"

    def as_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "toRank": self.to_rank,
            "amount": self.amount,
            "currency": self.currency,
        }


@dataclass(frozen=True)
class BoardDef:
    id: int
    key: str
    name: str
    metric: str
    event_type: str | None
    period: str
    rewards: tuple[RewardRule, ...]
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def currency(self) -> str | None:
        return CURRENCY_OF_METRIC.get(self.metric)

    def redis_key(self, period: Period) -> str:
        return keys.board_key(self.key, self.version, period.id)

    def period_at(self, moment: datetime, timezone: str) -> Period:
        return period_at(self.period, moment, timezone)


def expire_at(period: Period) -> int:
    """Unix time when the key of ``period`` expires (0: never, ALL_TIME)."""
    return 0 if period.end is None else int((period.end + GRACE).timestamp())


def is_live(period: Period, now: datetime) -> bool:
    """Whether ``period``'s Redis key is still kept (current, or finished within GRACE)."""
    return period.end is None or period.end + GRACE > now


def _board_from_row(row: Leaderboard) -> BoardDef:
    return BoardDef(
        id=row.id,
        key=row.key,
        name=row.name,
        metric=row.metric,
        event_type=row.event_type,
        period=row.period,
        rewards=tuple(
            RewardRule(r["rank"], r["toRank"], r["amount"], r["currency"]) for r in row.rewards
        ),
        active=row.active,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# ---- definitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardInput:
    key: str
    name: str
    metric: str
    period: str
    event_type: str | None = None
    rewards: Sequence[RewardRule] = ()
    active: bool = True


@dataclass(frozen=True)
class Upserted:
    board: BoardDef
    recount: bool  # new, or counting something else now: its Redis keys must be rebuilt


_boards_cache: TTLCache[str, tuple[BoardDef, ...]] = TTLCache(seconds=CACHE_SECONDS)


async def _validate(session: AsyncSession, data: BoardInput) -> None:
    if not KEY_PATTERN.match(data.key or ""):
        raise invalid("key must be 1 to 64 lowercase letters, digits, - or _", "key")
    if not data.name or not data.name.strip() or len(data.name) > 255:
        raise invalid("name must be 1 to 255 characters", "name")
    if data.metric not in METRICS:
        raise invalid(f"metric must be one of {', '.join(METRICS)}", "metric")
    if data.period not in PERIOD_KINDS:
        raise invalid(f"period must be one of {', '.join(PERIOD_KINDS)}", "period")
    if data.metric == EVENT_COUNT:
        if not data.event_type:
            raise invalid("an EVENT_COUNT board needs an eventType", "eventType")
        validate_event_type(data.event_type)
    elif data.event_type is not None:
        raise invalid("only EVENT_COUNT boards take an eventType", "eventType")
    taken: set[int] = set()
    for rule in data.rewards:
        if not 1 <= rule.rank <= rule.to_rank <= MAX_REWARD_RANK:
            raise invalid(
                f"reward ranks must satisfy 1 <= rank <= toRank <= {MAX_REWARD_RANK}", "rewards"
            )
        if not 1 <= rule.amount <= MAX_AMOUNT:
            raise invalid(f"reward amounts must be between 1 and {MAX_AMOUNT}", "rewards")
        ranks = set(range(rule.rank, rule.to_rank + 1))
        if taken & ranks:
            raise invalid("reward rank ranges overlap", "rewards")
        taken |= ranks
    currencies = {rule.currency for rule in data.rewards}
    if currencies:
        known = set(await session.scalars(select(Currency.key).where(Currency.key.in_(currencies))))
        if currencies - known:
            raise invalid(f"unknown currency {sorted(currencies - known)[0]!r}", "rewards")


async def upsert_board(session: AsyncSession, data: BoardInput) -> Upserted:
    """Create or update the board ``data.key``. Changing what it counts (metric, event type,
    period) gives it a new ``version``: new Redis keys, to be rebuilt from PostgreSQL."""
    await _validate(session, data)
    rewards = [rule.as_json() for rule in data.rewards]
    values = {
        "name": data.name.strip(),
        "metric": data.metric,
        "event_type": data.event_type,
        "period": data.period,
        "rewards": rewards,
        "active": data.active,
    }
    created = await session.scalar(
        insert(Leaderboard)
        .values(key=data.key, **values)
        .on_conflict_do_nothing(index_elements=[Leaderboard.key])
        .returning(Leaderboard.id)
    )
    row = await session.scalar(
        select(Leaderboard).where(Leaderboard.key == data.key).with_for_update()
    )
    assert row is not None
    recount = created is not None
    if not recount:
        counting = (row.metric, row.event_type, row.period)
        if counting != (data.metric, data.event_type, data.period):
            row.version += 1
            recount = True
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = func.now()
        await session.flush()
        await session.refresh(row)
    _boards_cache.clear()
    if recount:
        _rebuild_after_commit(session, data.key, changed=created is None)
    return Upserted(_board_from_row(row), recount)


def _rebuild_after_commit(session: AsyncSession, key: str, *, changed: bool) -> None:
    """A new board is built from history, a changed one re-counted, by a worker once the
    definition is committed (a changed one after every process's cache has expired)."""
    from leaderboards.tasks import rebuild_boards
    from server.broker import send_after_commit

    if session.info.get("after_commit") is None:  # not a Runtime.transaction(): no hooks
        return
    send_after_commit(session, rebuild_boards.message(key=key, wait_for_caches=changed))


async def all_boards(session: AsyncSession, *, fresh: bool = False) -> tuple[BoardDef, ...]:
    """Every board (active or not), from a per-process cache refreshed every few seconds."""
    cached = None if fresh else _boards_cache.get("all")
    if cached is not None:
        return cached
    rows = await session.scalars(select(Leaderboard).order_by(Leaderboard.key))
    return _boards_cache.put("all", tuple(_board_from_row(row) for row in rows))


async def active_boards(session: AsyncSession, *, fresh: bool = False) -> list[BoardDef]:
    return [board for board in await all_boards(session, fresh=fresh) if board.active]


Reader = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""Opens a read session on demand (``Context.reading``, ``Runtime.read_sessionmaker``): the hot
read paths only open one when a cache misses."""


async def boards_for_reading(reading: Reader) -> tuple[BoardDef, ...]:
    cached = _boards_cache.get("all")
    if cached is not None:
        return cached
    async with reading() as session:
        return await all_boards(session)


async def require_board(reading: Reader, key: str) -> BoardDef:
    for board in await boards_for_reading(reading):
        if board.key == key and board.active:
            return board
    raise not_found(f"no leaderboard {key!r}", "key")


_timezone_cache: TTLCache[str, str] = TTLCache(seconds=CACHE_SECONDS)


async def program_timezone(session: AsyncSession) -> str:
    return (await get_program(session)).timezone


async def timezone_for_reading(reading: Reader) -> str:
    cached = _timezone_cache.get("timezone")
    if cached is not None:
        return cached
    async with reading() as session:
        return _timezone_cache.put("timezone", await program_timezone(session))


@asynccontextmanager
async def read_session(runtime: Runtime) -> AsyncIterator[AsyncSession]:
    """A short-lived read session whose connection is discarded, not pooled, when the task
    is cancelled mid-query (a closed WebSocket, a sibling field's error): handed back
    mid-protocol it would poison the pool."""
    async with runtime.read_sessionmaker() as session:
        try:
            yield session
        except asyncio.CancelledError:
            await session.invalidate()
            raise


def reader(runtime: Runtime) -> Reader:
    return lambda: read_session(runtime)


# ---- hidden members -------------------------------------------------------------------------


HIDDEN_CACHE_SECONDS = 15.0


class _HiddenCache(TTLCache[str, tuple[int, ...]]):
    """Suspended member ids, refreshed in the background once stale: finding them is a scan
    of ``members`` (there is no index on ``status``), which must not sit in a request's
    latency nor run too often (~85 ms for 1,000,000 members). A suspension therefore shows on
    the boards within ``HIDDEN_CACHE_SECONDS``. ``clear()`` drops the stale copy too."""

    def __init__(self) -> None:
        super().__init__(seconds=HIDDEN_CACHE_SECONDS)
        self.stale: tuple[int, ...] | None = None
        self.refreshing: asyncio.Task[None] | None = None

    def clear(self) -> None:
        super().clear()
        self.stale = None


_hidden = _HiddenCache()


async def _load_hidden(runtime: Runtime) -> tuple[int, ...]:
    async with read_session(runtime) as session:
        ids = await session.scalars(
            select(Member.id).where(Member.status == HIDDEN_STATUS).order_by(Member.id)
        )
        value = tuple(ids)
    _hidden.put("hidden", value)
    _hidden.stale = value
    return value


async def hidden_members(runtime: Runtime) -> tuple[int, ...]:
    """Ids of members hidden from boards (seen by every process within a few seconds)."""
    fresh = _hidden.get("hidden")
    if fresh is not None:
        return fresh
    if _hidden.stale is None:
        return await _load_hidden(runtime)
    if _hidden.refreshing is None or _hidden.refreshing.done():

        async def refresh() -> None:
            try:
                await _load_hidden(runtime)
            except Exception:
                log.exception("could not refresh hidden leaderboard members")

        _hidden.refreshing = asyncio.create_task(refresh())
    return _hidden.stale


# ---- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    rank: int
    member_id: int
    score: int


@dataclass(frozen=True)
class Standings:
    board: BoardDef
    period: Period
    closed: bool  # read from the archive of a finished period
    total: int  # members on the board (hidden ones left out)
    entries: list[Entry] = field(default_factory=list)
    me: Entry | None = None


# The top rows of a board, the same for every caller, are kept for a fraction of a second per
# process: a board read thousands of times a second then costs Redis a few calls a second.
# Updates applied by this process forget them at once; another process's within the TTL.
WINDOW_CACHE_SECONDS = float(os.environ.get("QUESTLINE_LEADERBOARD_WINDOW_CACHE_MS", "250")) / 1000
_windows: TTLCache[tuple[str, int, tuple[int, ...]], store.Window] = TTLCache(
    seconds=WINDOW_CACHE_SECONDS, max_entries=1000
)


def forget_windows() -> None:
    """Drop the cached top rows, and the public responses built from them (boards changed in
    this process)."""
    _windows.clear()
    public_cache.forget()


def check_first(first: int) -> int:
    if not 1 <= first <= MAX_FIRST:
        raise invalid(f"first must be between 1 and {MAX_FIRST}", "first")
    return first


async def resolve_period(
    reading: Reader, board: BoardDef, period_text: str | None, now: datetime
) -> Period:
    timezone = await timezone_for_reading(reading)
    if period_text is None:
        return board.period_at(now, timezone)
    try:
        return parse_period(board.period, period_text, timezone)
    except ValueError as error:
        raise invalid(str(error), "period") from None


async def standings(
    runtime: Runtime,
    reading: Reader,
    board: BoardDef,
    period: Period,
    *,
    first: int,
    around_member_id: int | None = None,
    me_member_id: int | None = None,
    around_given: bool = False,
    now: datetime | None = None,
) -> Standings:
    """The top ``first`` rows of ``period`` (or the ``first`` rows around a member) and the
    caller's own row. Live periods come from Redis in one round trip; closed ones from the
    archive. ``around_given`` with no member id (unknown member): no rows."""
    check_first(first)
    now = now or clock.now()
    hidden = await hidden_members(runtime)
    if period.end is not None and period.end <= now:  # finished: closed yet?
        async with reading() as session:
            closed = await session.scalar(
                select(LeaderboardPeriod.entries).where(
                    LeaderboardPeriod.leaderboard_id == board.id,
                    LeaderboardPeriod.period_id == period.id,
                )
            )
            if closed is not None or not is_live(period, now):
                return await archived(
                    session, board, period, first, around_member_id, me_member_id,
                    around_given, hidden,
                )  # fmt: skip
    if around_given and around_member_id is None:
        around_member_id = -1  # not a member: the script finds no such row
    key = board.redis_key(period)
    shared = around_member_id is None and me_member_id is None  # the same for every caller
    found = _windows.get((key, first, hidden)) if shared else None
    if found is None:
        try:
            found = await store.window(
                runtime.redis,
                key,
                first=first,
                around_member_id=around_member_id,
                me_member_id=me_member_id,
                hidden=hidden,
            )
        except RedisError as error:
            log.warning("leaderboard read failed: Redis unavailable", error=str(error))
            raise LeaderboardsUnavailable(str(error)) from error
        if shared:
            _windows.put((key, first, hidden), found)
    return Standings(
        board,
        period,
        closed=False,
        total=found.total,
        entries=[Entry(row.rank, row.member_id, row.score) for row in found.rows],
        me=Entry(found.me.rank, found.me.member_id, found.me.score) if found.me else None,
    )


_ARCHIVE_RANGE = text(
    """
    SELECT rank, member_id, score FROM leaderboard_standings
    WHERE leaderboard_id = :board AND period_id = :period AND rank BETWEEN :low AND :high
    ORDER BY rank
    """
)
_ARCHIVE_RANK = text(
    """
    SELECT rank, score FROM leaderboard_standings
    WHERE leaderboard_id = :board AND period_id = :period AND member_id = :member
    """
)


async def archived(
    session: AsyncSession,
    board: BoardDef,
    period: Period,
    first: int,
    around_member_id: int | None,
    me_member_id: int | None,
    around_given: bool,
    hidden: Sequence[int],
) -> Standings:
    """A closed period's final standings. Ranks are the archived ones; a member suspended
    since is left out of the listing without renumbering the others (history stays as it
    was decided)."""
    params = {"board": board.id, "period": period.id}
    total = (
        await session.scalar(
            select(LeaderboardPeriod.entries).where(
                LeaderboardPeriod.leaderboard_id == board.id,
                LeaderboardPeriod.period_id == period.id,
            )
        )
        or 0
    )
    hidden_set = set(hidden)
    low = 1
    if around_given:
        if around_member_id is None or around_member_id in hidden_set:
            return Standings(board, period, closed=True, total=total)
        found = (
            await session.execute(_ARCHIVE_RANK, {**params, "member": around_member_id})
        ).first()
        if found is None:
            return Standings(board, period, closed=True, total=total)
        low = max(1, min(found.rank - (first - 1) // 2, total - first + 1))
    rows = (
        await session.execute(_ARCHIVE_RANGE, {**params, "low": low, "high": low + first - 1})
    ).all()
    entries = [Entry(r.rank, r.member_id, r.score) for r in rows if r.member_id not in hidden_set]
    me = None
    if me_member_id is not None and me_member_id not in hidden_set:
        mine = (await session.execute(_ARCHIVE_RANK, {**params, "member": me_member_id})).first()
        if mine is not None:
            me = Entry(mine.rank, me_member_id, mine.score)
    return Standings(board, period, closed=True, total=total, entries=entries, me=me)


def monotonic() -> float:
    return time.monotonic()


__all__ = [
    "EVENT_COUNT",
    "GRACE",
    "POINTS_EARNED",
    "XP_EARNED",
    "BoardDef",
    "BoardInput",
    "DomainError",
    "Entry",
    "ErrorCode",
    "LeaderboardsUnavailable",
    "RewardRule",
    "Standings",
    "active_boards",
    "all_boards",
    "hidden_members",
    "require_board",
    "standings",
    "upsert_board",
]
