"""Leaderboard actors: closing periods, rebuilding, keeping Redis honest.

* ``leaderboards.close_period`` (every 5 minutes): archive finished periods, grant prizes
  (``closing.py``). Idempotent.
* ``leaderboards.rebuild`` (sent after a board's definition changes, or by hand): rebuild one
  board or all of them from PostgreSQL (``rebuild.py``).
* ``leaderboards.maintain`` (every minute): rebuild everything when Redis lost its data (the
  ``meta:built`` key is missing: a restart without persistence, a failover, a flush), and the
  boards marked stale because a live update could not reach Redis.

Importing this module also subscribes the live-update handlers (``updates.py``), so a worker
that grants points (birthdays, prizes) updates the boards too.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import text

from leaderboards import keys, updates
from leaderboards.closing import Closed, close_finished_periods
from leaderboards.rebuild import RebuildReport, rebuild
from server.broker import actor, worker_runtime
from server.runtime import Runtime

log = structlog.get_logger("questline.leaderboards.tasks")

__all__ = ["close_period", "maintain", "rebuild_boards", "run_maintain", "updates"]


@actor("leaderboards.close_period", max_retries=5)
async def close_period(now: str | None = None) -> None:
    """Archive every finished period and grant its prizes (``now``: ISO time, for tests)."""
    runtime = await worker_runtime()
    when = datetime.fromisoformat(now) if now else None
    await close_finished_periods(runtime, now=when)


@actor("leaderboards.rebuild", max_retries=3, time_limit=30 * 60 * 1000)
async def rebuild_boards(key: str | None = None, wait_for_caches: bool = False) -> None:
    runtime = await worker_runtime()
    try:
        await rebuild(runtime, board_key=key, wait_for_caches=wait_for_caches)
    except LookupError:  # the board was removed or deactivated meanwhile
        log.info("leaderboard rebuild skipped: no such active board", key=key)


@actor("leaderboards.maintain", max_retries=0, time_limit=30 * 60 * 1000)
async def maintain() -> None:
    await run_maintain(await worker_runtime())


async def run_maintain(runtime: Runtime) -> list[RebuildReport]:
    """Rebuild what Redis lost or missed; returns what was rebuilt."""
    reports: list[RebuildReport] = []
    if not await runtime.redis.exists(keys.built_key()):
        log.warning("leaderboards: Redis has no built boards; rebuilding all")
        reports.append(await rebuild(runtime))
        return reports
    async with runtime.read_sessionmaker() as session:
        stale = list(
            await session.scalars(
                text(
                    "SELECT key FROM leaderboards"
                    " WHERE stale_since IS NOT NULL AND active ORDER BY key"
                )
            )
        )
    for key in stale:
        log.warning("leaderboards: rebuilding a stale board", key=key)
        try:
            reports.append(await rebuild(runtime, board_key=key))
        except LookupError:
            continue
    return reports


def closed_summary(closed: list[Closed]) -> str:
    return ", ".join(f"{c.board} {c.period} ({c.entries} entries)" for c in closed) or "nothing"
