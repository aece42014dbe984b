"""Dramatiq actors for the daily member jobs (scheduled in ``server.scheduler``).

Each actor loops over batches until nothing is left, one transaction per batch, so a crash
loses at most one uncommitted batch and a rerun continues where it stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from members.jobs import evaluate_tiers_batch, scan_inactivity_batch
from members.program import get_program
from members.rewards import birthday_batch
from server.broker import actor, worker_runtime
from server.runtime import Runtime

log = structlog.get_logger("questline.members.tasks")


def parse_as_of(as_of: str | None) -> datetime:
    if as_of is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(as_of)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_evaluate_tiers(runtime: Runtime, now: datetime) -> dict[str, int]:
    handled = downgraded = 0
    while True:
        async with runtime.transaction() as session:
            batch, moved = await evaluate_tiers_batch(session, now)
        handled, downgraded = handled + batch, downgraded + moved
        if batch == 0:
            break
    log.info("tiers evaluated", handled=handled, downgraded=downgraded)
    return {"handled": handled, "downgraded": downgraded}


async def run_scan_inactivity(runtime: Runtime, now: datetime) -> int:
    changed = 0
    while True:
        async with runtime.transaction() as session:
            program = await get_program(session, fresh=True)
            batch = await scan_inactivity_batch(session, now, program)
        changed += batch
        if batch == 0:
            break
    log.info("lifecycle stages scanned", changed=changed)
    return changed


async def run_birthday_rewards(runtime: Runtime, now: datetime) -> int:
    granted, after = 0, 0
    while True:
        async with runtime.transaction() as session:
            program = await get_program(session, fresh=True)
            if program.birthday_points <= 0:
                return 0
            batch = await birthday_batch(session, now, program, after)
        granted += batch.granted
        if batch.last_member_id is None:
            break
        after = batch.last_member_id
    log.info("birthday points granted", members=granted)
    return granted


@actor("members.evaluate_tiers", max_retries=3)
async def evaluate_tiers(as_of: str | None = None) -> None:
    """Tier retention at the end of each member's window."""
    await run_evaluate_tiers(await worker_runtime(), parse_as_of(as_of))


@actor("members.scan_inactivity", max_retries=3)
async def scan_inactivity(as_of: str | None = None) -> None:
    """Record lifecycle stage changes (AT_RISK, LAPSED, ...) once per change."""
    await run_scan_inactivity(await worker_runtime(), parse_as_of(as_of))


@actor("members.birthday_rewards", max_retries=3)
async def birthday_rewards(as_of: str | None = None) -> None:
    """Birthday points, once per member per year, on their local birthday (run hourly, so
    every timezone's day is covered)."""
    await run_birthday_rewards(await worker_runtime(), parse_as_of(as_of))
