"""Rebuilding from PostgreSQL gives back exactly the boards that live updates built, also while
updates keep arriving; closing a period archives it and grants its prizes once."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from leaderboards import keys
from leaderboards import service as boards
from leaderboards.closing import close_finished_periods
from leaderboards.periods import following, period_at
from leaderboards.rebuild import rebuild
from leaderboards.tasks import run_maintain
from ledger import service as ledger
from ledger.types import BatchGrant
from members.service import set_status
from server.cache import clear_all
from server.runtime import Runtime
from tests.leaderboards.conftest import Clock
from tests.leaderboards.helpers import (
    event,
    grant,
    make_board,
    make_member,
    redis_boards,
    standings,
)


async def _activity(runtime: Runtime, seed: int) -> None:
    """A random mix of everything that counts and everything that must not."""
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(12)]
    ids = [await make_member(runtime, name) for name in names]
    now = datetime.now(UTC)
    for step in range(60):
        member = rng.randrange(len(ids))
        kind = rng.choice(["grant", "xp", "event", "batch", "transfer", "pending", "other"])
        if kind == "grant":
            await grant(runtime, ids[member], rng.randint(1, 500))
        elif kind == "xp":
            await grant(runtime, ids[member], rng.randint(1, 50), currency="xp")
        elif kind == "event":
            at = now - timedelta(seconds=rng.randint(1, 3000))
            await event(runtime, names[member], rng.choice(["coffee", "review"]), at)
        elif kind == "batch":
            async with runtime.transaction() as session:
                await ledger.post_batch(
                    session,
                    [
                        BatchGrant(ids[i], rng.randint(1, 99), f"b{seed}-{step}-{i}")
                        for i in rng.sample(range(len(ids)), 3)
                    ],
                )
        elif kind == "transfer":
            async with runtime.transaction() as session:
                balance = await ledger.balances(session, ids[member])
                if balance.available > 1:
                    await ledger.transfer(
                        session, ids[member], ids[(member + 1) % len(ids)], 1,
                        idempotency_key=f"t{seed}-{step}",
                    )  # fmt: skip
        elif kind == "pending":
            async with runtime.transaction() as session:
                await ledger.credit_pending(
                    session, ids[member], 25, idempotency_key=f"p{seed}-{step}", pending_days=1
                )
        else:
            await event(runtime, names[member], "tea")


async def test_rebuild_after_wiping_redis_gives_identical_boards(runtime: Runtime) -> None:
    await make_board(runtime, "points-today")
    await make_board(runtime, "xp-week", boards.XP_EARNED, "WEEKLY")
    await make_board(runtime, "coffee-month", boards.EVENT_COUNT, "MONTHLY", "coffee")
    await make_board(runtime, "reviews-ever", boards.EVENT_COUNT, "ALL_TIME", "review")
    await make_board(runtime, "points-ever", period="ALL_TIME")
    await _activity(runtime, seed=7)
    async with runtime.transaction() as session:
        await set_status(session, "r3", "suspended")  # hidden on reads, kept in Redis
    live = await redis_boards(runtime)
    assert len(live) == 5 and all(live.values())

    await runtime.redis.flushdb()
    report = await rebuild(runtime)
    assert report.boards == 5 and report.replayed == 0
    assert await redis_boards(runtime) == live
    assert await runtime.redis.exists(keys.built_key())
    for key in live:  # expiries are back too
        ttl = await runtime.redis.ttl(key)
        assert (ttl == -1) == key.endswith(":all}")


async def test_a_rebuild_keeps_updates_that_arrive_meanwhile(runtime: Runtime) -> None:
    board = await make_board(runtime, "busy", period="ALL_TIME")
    ids = [await make_member(runtime, f"b{i}") for i in range(8)]
    for n, member in enumerate(ids):
        await grant(runtime, member, 10 + n)

    async def traffic() -> None:
        for round_ in range(25):
            await grant(runtime, ids[round_ % len(ids)], 1)
            await asyncio.sleep(0.005)

    report, _ = await asyncio.gather(rebuild(runtime), traffic())
    assert report.keys == 1
    after = await redis_boards(runtime)
    await runtime.redis.flushdb()
    await rebuild(runtime)
    assert await redis_boards(runtime) == after  # nothing lost, nothing counted twice
    total = sum(e.score for e in (await standings(runtime, board, first=20)).entries)
    assert total == sum(10 + n for n in range(8)) + 25


async def test_maintenance_rebuilds_a_wiped_redis_and_stale_boards(runtime: Runtime) -> None:
    board = await make_board(runtime, "healing", period="ALL_TIME")
    member = await make_member(runtime, "heal")
    await grant(runtime, member, 42)
    await runtime.redis.flushdb()  # Redis restarted without its data
    assert [r.boards for r in await run_maintain(runtime)] == [1]
    assert [e.score for e in (await standings(runtime, board)).entries] == [42]
    assert await run_maintain(runtime) == []  # nothing to do now

    async with runtime.transaction() as session:  # a live update could not reach Redis
        await session.execute(text("UPDATE leaderboards SET stale_since = now()"))
    await runtime.redis.delete(board.redis_key(period_at("ALL_TIME", datetime.now(UTC), "UTC")))
    assert [r.boards for r in await run_maintain(runtime)] == [1]
    assert [e.score for e in (await standings(runtime, board)).entries] == [42]
    async with runtime.read_sessionmaker() as session:
        assert await session.scalar(text("SELECT stale_since FROM leaderboards")) is None


async def test_closing_archives_final_standings_and_grants_prizes_once(
    runtime: Runtime, frozen_clock: Clock
) -> None:
    prizes = (boards.RewardRule(1, 1, 500), boards.RewardRule(2, 3, 100, "xp"))
    board = await make_board(runtime, "daily-cup", boards.EVENT_COUNT, "DAILY", "coffee", prizes)
    names = ["w1", "w2", "w3", "w4", "cheat"]
    ids = {name: await make_member(runtime, name) for name in names}
    now = datetime.now(UTC)
    yesterday = period_at("DAILY", now - timedelta(days=1), "UTC")
    assert yesterday.start is not None and yesterday.end is not None
    base = max(yesterday.start, now - timedelta(days=6, hours=23))
    for rank, name in enumerate(["cheat", "w1", "w2", "w3", "w4"]):
        for n in range(6 - rank):
            await event(runtime, name, "coffee", base + timedelta(minutes=rank * 10 + n))
    async with runtime.transaction() as session:
        await set_status(session, "cheat", "suspended")
        # the board has existed for a few days: yesterday is one of its periods
        await session.execute(
            text("UPDATE leaderboards SET created_at = now() - interval '3 days'")
        )
    clear_all()

    closed = await close_finished_periods(runtime, now=yesterday.end + timedelta(minutes=6))
    mine = [c for c in closed if c.period == yesterday.id]
    assert [(c.entries, c.rewarded) for c in mine] == [(4, 3)]
    assert await close_finished_periods(runtime, now=yesterday.end + timedelta(minutes=6)) == []

    async with runtime.read_sessionmaker() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT rank, member_id, score FROM leaderboard_standings"
                    " WHERE period_id = :period ORDER BY rank"
                ),
                {"period": yesterday.id},
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            (1, ids["w1"], 5), (2, ids["w2"], 4), (3, ids["w3"], 3), (4, ids["w4"], 2),
        ]  # fmt: skip
        points = await ledger.balances(session, ids["w1"], "points")
        xp = [(await ledger.balances(session, ids[n], "xp")).available for n in names]
    assert points.available == 500 and xp == [0, 100, 100, 0, 0]

    # the archive answers for that period, also once the Redis key is gone
    frozen_clock.set(yesterday.end + timedelta(days=3))
    await runtime.redis.flushdb()
    archived = await standings(runtime, board, period=yesterday, first=2, me_member_id=ids["w4"])
    assert archived.closed and archived.total == 4
    assert [(e.rank, e.member_id) for e in archived.entries] == [(1, ids["w1"]), (2, ids["w2"])]
    assert archived.me == boards.Entry(4, ids["w4"], 2)
    around = await standings(
        runtime, board, period=yesterday, first=3, around_member_id=ids["w4"], around_given=True
    )
    assert [e.rank for e in around.entries] == [2, 3, 4]
    # a period that was never on the board reads as empty
    older = await standings(
        runtime, board, period=period_at("DAILY", now - timedelta(days=30), "UTC")
    )
    assert older.entries == [] and older.total == 0
    assert following(yesterday, "UTC").start == yesterday.end


async def test_a_board_that_counts_something_else_is_rebuilt_under_a_new_version(
    runtime: Runtime,
) -> None:
    old = await make_board(runtime, "switch", period="ALL_TIME")
    member = await make_member(runtime, "sw")
    await grant(runtime, member, 5)
    await grant(runtime, member, 7, currency="xp")
    assert list(await redis_boards(runtime)) == [old.redis_key(period_at("ALL_TIME", NOW, "UTC"))]
    new = await make_board(runtime, "switch", boards.XP_EARNED, "ALL_TIME")
    assert new.version == old.version + 1
    report = await rebuild(runtime, board_key="switch")
    assert report.dropped == 1
    found = await redis_boards(runtime)
    assert list(found) == [new.redis_key(period_at("ALL_TIME", NOW, "UTC"))]
    assert [e.score for e in (await standings(runtime, new)).entries] == [7]


NOW = datetime.now(UTC)


async def test_the_scheduled_actors_run(runtime: Runtime) -> None:
    from leaderboards.tasks import close_period, maintain
    from server.broker import close_worker_runtime, run_actor
    from server.scheduler import PERIODIC_JOBS

    assert {"leaderboards.close_period", "leaderboards.maintain"} <= {
        job.actor_name for job in PERIODIC_JOBS
    }
    await make_board(runtime, "acted", boards.EVENT_COUNT, "DAILY", "coffee")
    async with runtime.transaction() as session:
        await session.execute(
            text("UPDATE leaderboards SET created_at = now() - interval '2 days'")
        )
    try:
        await run_actor(maintain)  # Redis was flushed: everything is rebuilt
        assert await runtime.redis.exists(keys.built_key())
        await run_actor(close_period, now=(NOW + timedelta(minutes=10)).isoformat())
        await run_actor(close_period, now=(NOW + timedelta(minutes=10)).isoformat())
    finally:
        await close_worker_runtime()
    async with runtime.read_sessionmaker() as session:
        closed = await session.scalar(text("SELECT count(*) FROM leaderboard_periods"))
    today = period_at("DAILY", NOW, "UTC")
    assert today.end is not None
    ended_today = today.end <= NOW + timedelta(minutes=5)  # run within 5 min of midnight
    assert closed == 2 + ended_today  # the day before yesterday and yesterday, once each
