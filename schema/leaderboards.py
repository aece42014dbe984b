"""Leaderboards: ``leaderboard``, ``leaderboards`` and ``upsertLeaderboard``.

Anyone may read a board (no token needed). An entry shows a member's public face only
(``LeaderboardMember``: externalId, displayName, activeTitle), never the ``Member`` type,
which carries balances and history. Faces come through a DataLoader (one query for a whole
page, whatever the number of rows) behind a short per-process cache: a busy board's top ten
costs no database work at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from leaderboards import clock
from leaderboards import service as boards
from leaderboards.periods import ALL_TIME_ID
from schema.badges import Title
from schema.context import Context
from schema.errors import ClientError, UserError
from schema.members import member_by_external_id_loader
from schema.mutations import run_in_transaction
from schema.permissions import IsAdmin
from schema.selection import asks_for
from server import public_cache, rawsql
from server.cache import TTLCache

UNAVAILABLE = "UNAVAILABLE"

# An anonymous read of a board (no `me`) is the same for everyone: its whole response may be
# served again for as long as the board's rows are cached (server.public_cache).
public_cache.register("leaderboard", boards.WINDOW_CACHE_SECONDS)


@strawberry.enum(description="What a board counts.")
class LeaderboardMetric(Enum):
    POINTS_EARNED = "POINTS_EARNED"
    XP_EARNED = "XP_EARNED"
    EVENT_COUNT = "EVENT_COUNT"


@strawberry.enum(name="LeaderboardPeriod", description="How often a board starts over.")
class LeaderboardPeriodKind(Enum):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    ALL_TIME = "ALL_TIME"


@strawberry.type(description="A prize for the ranks rank..toRank of every closed period.")
class LeaderboardReward:
    rank: int
    to_rank: int
    amount: int
    currency: str


@strawberry.type(description="A board's definition.")
class LeaderboardDefinition:
    key: str
    name: str
    metric: LeaderboardMetric
    event_type: str | None
    period: LeaderboardPeriodKind
    rewards: list[LeaderboardReward]
    active: bool


def definition_from(board: boards.BoardDef) -> LeaderboardDefinition:
    return LeaderboardDefinition(
        key=board.key,
        name=board.name,
        metric=LeaderboardMetric(board.metric),
        event_type=board.event_type,
        period=LeaderboardPeriodKind(board.period),
        rewards=[
            LeaderboardReward(rank=r.rank, to_rank=r.to_rank, amount=r.amount, currency=r.currency)
            for r in board.rewards
        ],
        active=board.active,
    )


@strawberry.type(description="What a board shows of a member.")
class LeaderboardMember:
    external_id: str
    display_name: str | None
    active_title: Title | None


@strawberry.type
class LeaderboardEntry:
    rank: int = strawberry.field(description="1-based; ties go to whoever got there first.")
    score: int
    member: LeaderboardMember


@strawberry.type(description="A board's standings in one period.")
class Leaderboard:
    key: str
    name: str
    metric: LeaderboardMetric
    event_type: str | None
    period: str = strawberry.field(
        description='The period shown: "2026-11-23" (DAILY), "2026-W48" (WEEKLY), '
        '"2026-11" (MONTHLY) or "all".'
    )
    period_type: LeaderboardPeriodKind
    period_start: datetime | None
    period_end: datetime | None
    closed: bool = strawberry.field(description="A finished period's final, archived standings.")
    total_entries: int = strawberry.field(description="How many members are on the board.")
    entries: list[LeaderboardEntry]
    me: LeaderboardEntry | None = strawberry.field(
        description="The caller's own row (member token; null when not on the board)."
    )


# ---- member display data ----------------------------------------------------------------------

# A member's public face on a board: one statement for a whole batch (members, and their
# equipped, unexpired title: the same rule as ``Member.activeTitle`` in schema/badges.py).
FACES_SQL = """
    SELECT m.id, m.external_id, m.display_name, t.key, t.name, t.description, t.max_holders
    FROM members m
    LEFT JOIN member_titles mt ON mt.member_id = m.id AND mt.equipped
                              AND (mt.expires_at IS NULL OR mt.expires_at > now())
    LEFT JOIN titles t ON t.id = mt.title_id
    WHERE m.id = ANY($1::bigint[])
"""
FACE_CACHE_SECONDS = 10.0

# Boards are read far more often than names and titles change: faces are kept a few seconds
# per process (a rename or a newly equipped title shows within FACE_CACHE_SECONDS), and an
# externalId's member id, which never changes, longer.
_faces: TTLCache[int, LeaderboardMember] = TTLCache(FACE_CACHE_SECONDS, max_entries=200_000)
_member_ids: TTLCache[str, int] = TTLCache(300.0, max_entries=200_000)


def faces_loader(ctx: Context) -> DataLoader[int, LeaderboardMember | None]:
    """Member id -> public face, ONE query per batch whatever the number of rows."""

    async def load(ids: list[int]) -> list[LeaderboardMember | None]:
        async with ctx.querying() as connection:
            rows = await rawsql.fetch(connection, FACES_SQL, ids)
        found = {}
        for row in rows:
            title = None
            if row[3] is not None:
                title = Title(key=row[3], name=row[4], description=row[5], max_holders=row[6])
            found[row[0]] = _faces.put(
                row[0],
                LeaderboardMember(external_id=row[1], display_name=row[2], active_title=title),
            )
        return [found.get(member_id) for member_id in ids]

    return DataLoader(load_fn=load)


async def _display(ctx: Context, entries: Sequence[boards.Entry]) -> dict[int, LeaderboardMember]:
    shown: dict[int, LeaderboardMember] = {}
    missing: list[int] = []
    for entry in entries:
        face = _faces.get(entry.member_id)
        if face is not None:
            shown[entry.member_id] = face
        elif entry.member_id not in missing:
            missing.append(entry.member_id)
    if missing:
        loaded = await ctx.loader("leaderboard_faces", faces_loader).load_many(missing)
        shown.update({i: face for i, face in zip(missing, loaded, strict=True) if face})
    return shown


async def _member_ids_of(ctx: Context, external_ids: list[str]) -> dict[str, int]:
    ids = {name: i for name in external_ids if (i := _member_ids.get(name)) is not None}
    missing = [name for name in external_ids if name not in ids]
    if missing:
        loader = ctx.loader("member_by_external_id", member_by_external_id_loader)
        for name, member in zip(missing, await loader.load_many(missing), strict=True):
            if member is not None:
                ids[name] = _member_ids.put(name, member.id)
    return ids


def _entry(
    entry: boards.Entry | None, shown: dict[int, LeaderboardMember]
) -> LeaderboardEntry | None:
    if entry is None or entry.member_id not in shown:
        return None
    return LeaderboardEntry(rank=entry.rank, score=entry.score, member=shown[entry.member_id])


def unavailable() -> ClientError:
    return ClientError(
        "Leaderboards are temporarily unavailable (their store cannot be reached); "
        "try again shortly.",
        UNAVAILABLE,
    )


async def build_leaderboard(
    ctx: Context,
    key: str,
    *,
    first: int,
    around: str | None,
    period: str | None,
    want_me: bool = True,
    now: datetime | None = None,
) -> Leaderboard:
    """Resolve a whole ``Leaderboard`` (entries and member data included) with ``ctx``'s
    loaders: one Redis round trip for the ranks, at most one query for the members' faces
    (none when they were shown in the last few seconds). ``want_me``: False when the query
    does not ask for ``me`` (the caller's rank then costs nothing, and the top rows can come
    from the short shared cache)."""
    now = now or clock.now()
    board = await boards.require_board(ctx.reading, key)
    shown_period = await boards.resolve_period(ctx.reading, board, period, now)
    boards.check_first(first)
    principal = ctx.principal
    me_external = principal.external_id if principal.is_member and want_me else None
    lookups = [name for name in (around, me_external) if name]
    ids = await _member_ids_of(ctx, lookups) if lookups else {}
    try:
        result = await boards.standings(
            ctx.runtime,
            ctx.reading,
            board,
            shown_period,
            first=first,
            around_member_id=ids.get(around) if around else None,
            me_member_id=ids.get(me_external) if me_external else None,
            around_given=around is not None,
            now=now,
        )
    except boards.LeaderboardsUnavailable:
        raise unavailable() from None
    everyone = [*result.entries, *([result.me] if result.me else [])]
    shown = await _display(ctx, everyone)
    entries = [row for row in (_entry(e, shown) for e in result.entries) if row is not None]
    return Leaderboard(
        key=board.key,
        name=board.name,
        metric=LeaderboardMetric(board.metric),
        event_type=board.event_type,
        period=shown_period.id,
        period_type=LeaderboardPeriodKind(board.period),
        period_start=shown_period.start,
        period_end=shown_period.end,
        closed=result.closed,
        total_entries=result.total,
        entries=entries,
        me=_entry(result.me, shown),
    )


@strawberry.type
class LeaderboardQueries:
    @strawberry.field(
        description="A board's standings (anyone may read): the top `first` rows, or with "
        "`around` (an externalId) the rows around that member; `period` picks a past period "
        f'(e.g. "2026-11-23", "2026-W48", "2026-11", "{ALL_TIME_ID}"), default the current one.'
    )
    async def leaderboard(
        self,
        info: Info,
        key: str,
        first: int = 10,
        around: str | None = None,
        period: str | None = None,
    ) -> Leaderboard:
        return await build_leaderboard(
            info.context,
            key,
            first=first,
            around=around,
            period=period,
            want_me=asks_for(info, "me"),
        )

    @strawberry.field(description="Every active board's definition, in key order.")
    async def leaderboards(self, info: Info) -> list[LeaderboardDefinition]:
        async with info.context.reading() as session:
            found = await boards.active_boards(session)
        return [definition_from(board) for board in found]


# ---- mutations ----------------------------------------------------------------------------------


@strawberry.input
class LeaderboardRewardInput:
    rank: int
    to_rank: int | None = strawberry.field(default=None, description="Default: rank.")
    amount: int
    currency: str = "points"


@strawberry.input
class UpsertLeaderboardInput:
    key: str
    name: str
    metric: LeaderboardMetric
    event_type: str | None = strawberry.field(
        default=None, description="The event type an EVENT_COUNT board counts."
    )
    period: LeaderboardPeriodKind
    rewards: list[LeaderboardRewardInput] | None = strawberry.field(
        default=None, description="Prizes granted once when a period closes."
    )
    active: bool = True


@strawberry.type
class UpsertLeaderboardPayload:
    leaderboard: LeaderboardDefinition | None
    errors: list[UserError]


@strawberry.type
class LeaderboardMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Create or change a board (keyed by `key`). Changing what it counts "
        "rebuilds it from the ledger and events.",
    )
    async def upsert_leaderboard(
        self, info: Info, input: UpsertLeaderboardInput
    ) -> UpsertLeaderboardPayload:
        async def work(session: AsyncSession) -> UpsertLeaderboardPayload:
            done = await boards.upsert_board(
                session,
                boards.BoardInput(
                    key=input.key,
                    name=input.name,
                    metric=input.metric.value,
                    period=input.period.value,
                    event_type=input.event_type,
                    rewards=[
                        boards.RewardRule(
                            r.rank,
                            r.to_rank if r.to_rank is not None else r.rank,
                            r.amount,
                            r.currency,
                        )
                        for r in input.rewards or []
                    ],
                    active=input.active,
                ),
            )
            return UpsertLeaderboardPayload(leaderboard=definition_from(done.board), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertLeaderboardPayload(leaderboard=None, errors=errors)
        )


__all__ = [
    "Leaderboard",
    "LeaderboardMutations",
    "LeaderboardQueries",
    "build_leaderboard",
]
