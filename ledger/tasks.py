"""Dramatiq actors of the ledger. Both are idempotent and safe to run concurrently: every
expiry and every vest is keyed (``expire:lot:<id>``, ``vest:<id>``) and takes the member
account locks in id order before re-reading what is due.

The work is in plain async functions (``run_settle_expirations``, ``run_vest_pending``) that
commit after every batch, so a long backlog never holds locks for long and a crash loses at
most one batch (which the next run redoes). The scheduler sends both hourly by default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

import server.broker  # noqa: F401  (configures the global broker before actors are declared)
from ledger import service
from ledger.types import BatchOutcome, Settlement
from server.broker import actor, worker_runtime
from server.runtime import Runtime


async def _drain(
    runtime: Runtime,
    batch: Callable[[AsyncSession, datetime, int], Awaitable[BatchOutcome]],
    as_of: datetime | None,
    batch_size: int,
) -> Settlement:
    """``service.drain`` with every batch in a transaction of its own."""

    async def committed(when: datetime, size: int) -> BatchOutcome:
        async with runtime.transaction() as session:
            return await batch(session, when, size)

    return await service.drain(committed, as_of, batch_size)


async def run_settle_expirations(
    runtime: Runtime,
    as_of: datetime | None = None,
    batch_size: int = service.DEFAULT_BATCH_SIZE,
) -> Settlement:
    """Expire every lot due by ``as_of`` (default now), committing after each batch."""
    return await _drain(runtime, service.settle_expirations_batch, as_of, batch_size)


async def run_vest_pending(
    runtime: Runtime,
    as_of: datetime | None = None,
    batch_size: int = service.DEFAULT_BATCH_SIZE,
) -> Settlement:
    """Vest every pending credit due by ``as_of`` (default now), committing after each batch."""
    return await _drain(runtime, service.vest_pending_batch, as_of, batch_size)


def _parse(as_of: str | None) -> datetime | None:
    return datetime.fromisoformat(as_of) if as_of else None


@actor("ledger.settle_expirations", max_retries=3, time_limit=30 * 60 * 1000)
async def settle_expirations(as_of: str | None = None) -> dict[str, int]:
    """Expire due lots. ``as_of``: an ISO 8601 time (default: now; never later than now)."""
    result = await run_settle_expirations(await worker_runtime(), _parse(as_of))
    return {"lots": result.count, "points": result.amount, "batches": result.batches}


@actor("ledger.vest_pending", max_retries=3, time_limit=30 * 60 * 1000)
async def vest_pending(as_of: str | None = None) -> dict[str, int]:
    """Make due pending credits available. ``as_of`` as for ``settle_expirations``."""
    result = await run_vest_pending(await worker_runtime(), _parse(as_of))
    return {"credits": result.count, "points": result.amount, "batches": result.batches}
