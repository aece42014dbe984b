"""Rebuild boards in Redis from PostgreSQL: ``questline leaderboard rebuild [--key]``.

For every live period of every board (the current one, and finished ones whose key still
lives, see ``service.GRACE``) the scores are computed set-based (``scores.py``) inside ONE
``REPEATABLE READ`` snapshot, streamed with a cursor and written with pipelined ``ZADD``s of
thousands of members each into a temporary key, which then replaces the live key atomically.

Rebuilding while the API runs loses nothing and counts nothing twice:

1. Before the snapshot is taken, a ``<key>:rebuilding`` marker is set. From then on the live
   update script also appends every fact it applies to ``<key>:journal`` (with its
   transaction or event id).
2. The snapshot is taken, and the temporary key is built from it.
3. Journaled facts whose transaction/event the snapshot cannot see (committed after it) are
   applied to the temporary key; those it sees are already counted. Visibility is asked of
   the same snapshot, so the answer is exact.
4. A script swaps the temporary key in *only if* no fact was journaled since step 3 (else
   step 3 runs again for the new ones) and removes the marker, atomically: from then on live
   updates go to the new key directly.

Live updates run right after their commit; the swap waits ``SETTLE_SECONDS`` after the
snapshot so that an update of a transaction the snapshot saw, still on its way, is journaled
(and skipped) rather than applied to the new key (a handler delayed longer than that after
its commit would be counted twice until the next rebuild).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy import text
from tqdm import tqdm

from leaderboards import clock, keys, store
from leaderboards.encoding import encode, slot_of
from leaderboards.periods import Period, preceding
from leaderboards.scores import score_query
from leaderboards.service import (
    CACHE_SECONDS,
    BoardDef,
    active_boards,
    expire_at,
    forget_windows,
    is_live,
    program_timezone,
)
from server.runtime import Runtime

log = structlog.get_logger("questline.leaderboards.rebuild")

MARKER_TTL_SECONDS = 3600
ZADD_CHUNK = 5000  # members per ZADD
FETCH_CHUNK = 20000  # rows per cursor fetch (one pipeline of ZADDs each)
SETTLE_SECONDS = 0.5

SWAP = store.LuaScript(
    """
-- KEYS: live key, temporary key, marker, journal. ARGV[1]: journal entries consumed.
if redis.call('LLEN', KEYS[4]) ~= tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""
)


@dataclass(frozen=True)
class Target:
    board: BoardDef
    period: Period

    @property
    def key(self) -> str:
        return self.board.redis_key(self.period)


@dataclass
class RebuildReport:
    boards: int = 0
    keys: int = 0
    members: int = 0
    replayed: int = 0
    dropped: int = 0  # keys of old board versions or of removed boards
    seconds: float = 0.0
    per_key: dict[str, int] = field(default_factory=dict)


def live_periods(board: BoardDef, now: datetime, timezone: str) -> list[Period]:
    """The board's periods whose key is kept: the current one and recent finished ones."""
    current = board.period_at(now, timezone)
    periods = [current]
    while current.start is not None:
        current = preceding(current, timezone)
        if not is_live(current, now):
            break
        periods.append(current)
    return periods


async def rebuild(
    runtime: Runtime,
    *,
    board_key: str | None = None,
    now: datetime | None = None,
    progress: bool = False,
    wait_for_caches: bool = False,
) -> RebuildReport:
    """Rebuild every active board (or only ``board_key``). ``wait_for_caches``: first let
    every process's definition cache expire (after a board changed what it counts)."""
    started = time.perf_counter()
    now = now or clock.now()
    async with runtime.read_sessionmaker() as session:
        boards = await active_boards(session, fresh=True)
        timezone = await program_timezone(session)
    if board_key is not None:
        boards = [board for board in boards if board.key == board_key]
        if not boards:
            raise LookupError(f"no active leaderboard {board_key!r}")
    if wait_for_caches:
        await asyncio.sleep(CACHE_SECONDS + 1)
    targets = [
        Target(board, period) for board in boards for period in live_periods(board, now, timezone)
    ]
    report = RebuildReport(boards=len(boards), keys=len(targets))
    rebuild_started_at = await _db_now(runtime)
    redis = runtime.redis
    await _mark(redis, targets)
    try:
        await _build(runtime, targets, report, progress)
    except BaseException:
        await _unmark(redis, targets)
        raise
    forget_windows()
    report.dropped = await _drop_stale_keys(redis, boards, everything=board_key is None)
    if board_key is None:
        await redis.set(keys.built_key(), now.isoformat())
    async with runtime.transaction() as session:
        await session.execute(
            text(
                "UPDATE leaderboards SET stale_since = NULL"
                " WHERE id = ANY(:ids) AND stale_since < :started"
            ),
            {"ids": [board.id for board in boards], "started": rebuild_started_at},
        )
    report.seconds = time.perf_counter() - started
    log.info(
        "leaderboards rebuilt",
        boards=report.boards,
        keys=report.keys,
        members=report.members,
        replayed=report.replayed,
        seconds=round(report.seconds, 2),
    )
    return report


async def _drop_stale_keys(
    redis: aioredis.Redis, boards: list[BoardDef], *, everything: bool
) -> int:
    """Delete the keys of older versions of ``boards`` (a board that now counts something
    else) and, on a full rebuild, of boards that are gone or inactive. Finished periods
    expire on their own; this is for keys that never would (ALL_TIME)."""
    current = {board.key: board.version for board in boards}
    stale: list[str] = []
    patterns = [keys.prefix() + "{*"] if everything else [
        keys.prefix() + "{" + board.key + ":v*" for board in boards
    ]  # fmt: skip
    for pattern in patterns:
        async for raw in redis.scan_iter(match=pattern, count=1000):
            name = _text(raw)
            inside = name[len(keys.prefix()) + 1 : name.find("}")]
            board_key, _, rest = inside.partition(":v")
            version = rest.partition(":")[0]
            if current.get(board_key) != (int(version) if version.isdigit() else None):
                stale.append(name)
    for start in range(0, len(stale), 500):
        await redis.unlink(*stale[start : start + 500])
    return len(stale)


async def _db_now(runtime: Runtime) -> datetime:
    async with runtime.read_sessionmaker() as session:
        value: datetime = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
        return value


async def _mark(redis: aioredis.Redis, targets: Iterable[Target]) -> None:
    pipe = redis.pipeline(transaction=False)
    for target in targets:
        pipe.set(keys.rebuilding_key(target.key), "1", ex=MARKER_TTL_SECONDS)
        pipe.delete(keys.journal_key(target.key), keys.tmp_key(target.key))
    await pipe.execute()


async def _unmark(redis: aioredis.Redis, targets: Iterable[Target]) -> None:
    try:
        pipe = redis.pipeline(transaction=False)
        for target in targets:
            pipe.delete(
                keys.rebuilding_key(target.key),
                keys.journal_key(target.key),
                keys.tmp_key(target.key),
            )
        await pipe.execute()
    except Exception:  # Redis is what failed; the markers expire on their own
        log.warning("could not clear rebuild markers")


async def _build(
    runtime: Runtime, targets: list[Target], report: RebuildReport, progress: bool
) -> None:
    redis = runtime.redis
    async with runtime.engine.connect() as connection:
        # SQLAlchemy stays out of the way (autocommit); the snapshot is asyncpg's own
        # REPEATABLE READ transaction on the same pooled connection.
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        raw = await connection.get_raw_connection()
        conn: Any = raw.driver_connection
        async with conn.transaction(isolation="repeatable_read"):
            await conn.fetchval("SELECT 1")  # the snapshot starts here (markers are set)
            settled_at = time.monotonic() + SETTLE_SECONDS
            bar = tqdm(
                total=len(targets),
                unit=" keys",
                disable=not progress,
                desc="leaderboards",
                dynamic_ncols=True,
            )
            with bar:
                for target in targets:
                    written = await _build_key(conn, redis, target, bar)
                    report.per_key[target.key] = written
                    report.members += written
                    pause = settled_at - time.monotonic()
                    if pause > 0:
                        await asyncio.sleep(pause)
                    report.replayed += await _catch_up_and_swap(conn, redis, target)
                    bar.update(1)


async def _build_key(conn: Any, redis: aioredis.Redis, target: Target, bar: tqdm[Any]) -> int:
    query = await score_query(conn, target.board, target.period)
    if query is None:
        return 0
    tmp = keys.tmp_key(target.key)
    period = target.period
    written = 0
    bar.set_postfix_str(f"{target.board.key} {period.id}", refresh=True)
    cursor = await conn.cursor(query.sql, *query.args)
    while rows := await cursor.fetch(FETCH_CHUNK):
        pipe = redis.pipeline(transaction=False)
        for offset in range(0, len(rows), ZADD_CHUNK):
            mapping = {
                str(row[0]): encode(row[1], slot_of(period, row[2]))
                for row in rows[offset : offset + ZADD_CHUNK]
            }
            pipe.zadd(tmp, mapping)
        await pipe.execute()
        written += len(rows)
        bar.set_postfix_str(f"{target.board.key} {period.id}: {written:,} members", refresh=False)
    if written:
        deadline = expire_at(period)
        if deadline:
            await redis.expireat(tmp, deadline)
    return written


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_VISIBLE_TRANSACTIONS = "SELECT id FROM transactions WHERE id = ANY($1::bigint[])"
_VISIBLE_EVENTS = "SELECT id FROM events WHERE id = ANY($1::bigint[])"


async def _catch_up_and_swap(conn: Any, redis: aioredis.Redis, target: Target) -> int:
    """Apply the journaled facts the snapshot does not contain, then swap the key in."""
    key = target.key
    journal = keys.journal_key(key)
    consumed = replayed = 0
    while True:
        raw = await redis.lrange(journal, consumed, -1)
        if raw:
            entries = [_text(entry).split(" ") for entry in raw]
            consumed += len(entries)
            replayed += await _replay_invisible(conn, redis, target, entries)
        swapped = await store.run_script(
            redis,
            SWAP,
            [key, keys.tmp_key(key), keys.rebuilding_key(key), journal],
            [consumed],
        )
        if int(swapped) == 1:
            return replayed


async def _replay_invisible(
    conn: Any, redis: aioredis.Redis, target: Target, entries: list[list[str]]
) -> int:
    transactions = [int(e[0][2:]) for e in entries if e[0].startswith("t:")]
    events = [int(e[0][2:]) for e in entries if e[0].startswith("e:")]
    seen: set[str] = set()
    if transactions:
        seen |= {f"t:{r[0]}" for r in await conn.fetch(_VISIBLE_TRANSACTIONS, transactions)}
    if events:
        seen |= {f"e:{r[0]}" for r in await conn.fetch(_VISIBLE_EVENTS, events)}
    missing = [
        store.Fact(
            key=keys.tmp_key(target.key),
            member_id=int(member),
            amount=int(amount),
            slot=int(slot),
            expire_at=expire_at(target.period),
            source=source,
        )
        for source, member, amount, slot in entries
        if source not in seen
    ]
    if missing:
        await store.apply(redis, missing)
    return len(missing)
