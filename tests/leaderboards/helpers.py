"""Members, boards and activity for the leaderboard tests, straight through the services."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from leaderboards import keys
from leaderboards import service as boards
from leaderboards.periods import Period
from ledger import service as ledger
from members.service import register_member
from quests.events import record_event
from server.runtime import Runtime


async def make_member(runtime: Runtime, external_id: str, display_name: str | None = None) -> int:
    async with runtime.transaction() as session:
        registration = await register_member(
            session, external_id=external_id, display_name=display_name or external_id.title()
        )
        return registration.member.id


async def make_board(
    runtime: Runtime,
    key: str,
    metric: str = boards.POINTS_EARNED,
    period: str = "DAILY",
    event_type: str | None = None,
    rewards: tuple[boards.RewardRule, ...] = (),
) -> boards.BoardDef:
    async with runtime.transaction() as session:
        done = await boards.upsert_board(
            session,
            boards.BoardInput(
                key=key,
                name=key.replace("-", " ").title(),
                metric=metric,
                period=period,
                event_type=event_type,
                rewards=rewards,
            ),
        )
    return done.board


_grants = iter(range(1, 10**9))


async def grant(
    runtime: Runtime, member_id: int, amount: int, currency: str = "points", pause: float = 0.0
) -> None:
    """One grant in its own transaction (``pause`` after it: the next one is later)."""
    async with runtime.transaction() as session:
        await ledger.grant(
            session, member_id, amount, idempotency_key=f"g-{next(_grants)}", currency=currency
        )
    if pause:
        await asyncio.sleep(pause)


_events = iter(range(1, 10**9))


async def event(
    runtime: Runtime, external_id: str, event_type: str, occurred_at: datetime | None = None
) -> None:
    async with runtime.transaction() as session:
        await record_event(
            session,
            external_id=external_id,
            event_type=event_type,
            properties={},
            occurred_at=occurred_at,
            idempotency_key=f"e-{next(_events)}",
            now=datetime.now(occurred_at.tzinfo) if occurred_at else datetime.now().astimezone(),
        )


async def board_key_now(runtime: Runtime, board: boards.BoardDef) -> str:
    async with runtime.read_sessionmaker() as session:
        timezone = await boards.program_timezone(session)
    from leaderboards import clock

    return board.redis_key(board.period_at(clock.now(), timezone))


async def standings(
    runtime: Runtime,
    board: boards.BoardDef,
    period: Period | None = None,
    **kwargs: Any,
) -> boards.Standings:
    from leaderboards import clock

    if period is None:
        async with runtime.read_sessionmaker() as session:
            period = board.period_at(clock.now(), await boards.program_timezone(session))
    kwargs.setdefault("first", 10)
    return await boards.standings(runtime, runtime.read_sessionmaker, board, period, **kwargs)


async def redis_boards(runtime: Runtime) -> dict[str, list[Any]]:
    """Every board key in Redis with its exact contents (member, encoded value)."""
    found: dict[str, list[Any]] = {}
    async for raw in runtime.redis.scan_iter(match=keys.prefix() + "{*", count=1000):
        key = raw.decode()
        if key.endswith("}"):
            found[key] = await runtime.redis.zrange(key, 0, -1, withscores=True)
    return found
