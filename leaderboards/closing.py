"""Closing finished periods: archive the final standings, grant the prizes, once.

``leaderboards.close_period`` (scheduled every few minutes) closes every period of every
active, non-ALL_TIME board that ended at least ``CLOSE_DELAY`` ago and is not closed yet, in
order, one database transaction per period:

1. insert the ``leaderboard_periods`` row — the "closed" marker. ``ON CONFLICT DO NOTHING``
   makes a second run (or a second worker at the same moment, which waits on the first one's
   row) skip the period: closing is idempotent;
2. write the standings with ONE ``INSERT .. SELECT`` computed from PostgreSQL (``scores.py``,
   the same definition the live boards use), suspended members left out, ranked densely;
3. grant the board's configured prizes to the ranks they name, through the ledger, keyed
   ``leaderboard:<board>:<period>:rank:<n>`` (a retry replays, nothing is granted twice).

The standings are final at close: an event reported later for that period still reaches the
live key (until it expires, ``GRACE``), not the archive. The period's Redis key is left to
expire; reads of a closed period come from the archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from leaderboards import clock
from leaderboards.models import LeaderboardPeriod
from leaderboards.periods import Period, following
from leaderboards.scores import archive_statement, score_query
from leaderboards.service import BoardDef, active_boards, expire_at, program_timezone
from ledger import service as ledger
from members.program import get_program
from server.runtime import Runtime

log = structlog.get_logger("questline.leaderboards.closing")

CLOSE_DELAY = timedelta(minutes=5)  # let transactions that started before the end commit
MAX_PERIODS_PER_RUN = 400


@dataclass(frozen=True)
class Closed:
    board: str
    period: str
    entries: int
    rewarded: int


async def _driver(session: AsyncSession) -> Any:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


_LAST_CLOSED = text("SELECT max(period_end) FROM leaderboard_periods WHERE leaderboard_id = :board")


async def close_finished_periods(
    runtime: Runtime, *, now: datetime | None = None, board_key: str | None = None
) -> list[Closed]:
    """Close every finished, unclosed period (see the module docstring)."""
    now = now or clock.now()
    async with runtime.read_sessionmaker() as session:
        boards = [b for b in await active_boards(session, fresh=True) if b.period != "ALL_TIME"]
        timezone = await program_timezone(session)
        if board_key is not None:
            boards = [b for b in boards if b.key == board_key]
        starts: dict[int, datetime] = {}
        for board in boards:
            last = await session.scalar(_LAST_CLOSED, {"board": board.id})
            starts[board.id] = last or board.created_at
    closed: list[Closed] = []
    for board in boards:
        period = board.period_at(starts[board.id], timezone)
        for _ in range(MAX_PERIODS_PER_RUN):
            if period.end is None or period.end > now - CLOSE_DELAY:
                break
            done = await close_one(runtime, board, period, timezone)
            if done is not None:
                closed.append(done)
            period = following(period, timezone)
    return closed


async def close_one(
    runtime: Runtime, board: BoardDef, period: Period, timezone: str
) -> Closed | None:
    """Archive ``period`` of ``board`` and grant its prizes; None if it was closed before."""
    assert period.start is not None and period.end is not None
    async with runtime.transaction() as session:
        marker = await session.scalar(
            insert(LeaderboardPeriod)
            .values(
                leaderboard_id=board.id,
                period_id=period.id,
                period_start=period.start,
                period_end=period.end,
                timezone=timezone,
                entries=0,
            )
            .on_conflict_do_nothing()
            .returning(LeaderboardPeriod.period_id)
        )
        if marker is None:
            return None
        conn = await _driver(session)
        entries = 0
        query = await score_query(conn, board, period)
        if query is not None:
            statement = archive_statement(query, board, period)
            status = await conn.execute(statement.sql, *statement.args)
            entries = int(status.rsplit(" ", 1)[-1])
        rewarded = await _grant_prizes(session, conn, board, period) if entries else 0
        await session.execute(
            text(
                "UPDATE leaderboard_periods SET entries = :entries, rewarded = :rewarded"
                " WHERE leaderboard_id = :board AND period_id = :period"
            ),
            {"entries": entries, "rewarded": rewarded, "board": board.id, "period": period.id},
        )
    await _let_expire(runtime, board, period)
    log.info(
        "leaderboard period closed",
        board=board.key,
        period=period.id,
        entries=entries,
        rewarded=rewarded,
    )
    return Closed(board.key, period.id, entries, rewarded)


async def _grant_prizes(session: AsyncSession, conn: Any, board: BoardDef, period: Period) -> int:
    if not board.rewards:
        return 0
    program = await get_program(session)
    granted = 0
    for rule in board.rewards:
        winners = await conn.fetch(
            "SELECT rank, member_id FROM leaderboard_standings"
            " WHERE leaderboard_id = $1 AND period_id = $2 AND rank BETWEEN $3 AND $4"
            " ORDER BY rank",
            board.id,
            period.id,
            rule.rank,
            rule.to_rank,
        )
        for rank, member_id in winners:
            posted = await ledger.grant(
                session,
                member_id,
                rule.amount,
                idempotency_key=f"leaderboard:{board.key}:{period.id}:rank:{rank}",
                currency=rule.currency,
                memo=f"{board.name} ({period.id}): rank {rank}",
                reference=f"leaderboard:{board.key}:{period.id}",
                kind="leaderboard",
                lifetime_days=program.points_lifetime_days if rule.currency == "points" else None,
            )
            granted += int(not posted.replayed)
    return granted


async def _let_expire(runtime: Runtime, board: BoardDef, period: Period) -> None:
    """Make sure the finished period's key expires (it normally has its expiry already)."""
    try:
        await runtime.redis.expireat(board.redis_key(period), expire_at(period))
    except Exception as error:  # the archive is written; Redis can be fixed later
        log.warning("could not set expiry of a closed period's key", error=str(error))
