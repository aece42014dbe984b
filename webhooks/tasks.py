"""Dramatiq actors of the webhooks domain.

- ``webhooks.deliver``: attempt the given deliveries (sent after the commit that created them,
  and again, delayed, for each retry). Dramatiq's own retries are off: the retry schedule is
  the delivery's (``webhooks.delivery``), kept in the database.
- ``webhooks.retry_due`` (every minute): whatever is due and was not sent (a lost message, a
  crashed worker, events written by settlement or a scan).
- ``webhooks.announce_expiring`` (hourly): points.expiring events.
- ``webhooks.prune`` (daily): finished deliveries older than the retention period.

All are idempotent and safe to run concurrently (claims, dedupe keys).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

import server.broker  # noqa: F401  (configures the global broker before actors are declared)
from server.broker import actor, worker_runtime
from server.runtime import Runtime
from webhooks import delivery, service
from webhooks.outbox import enqueue_deliveries

log = structlog.get_logger("questline.webhooks.tasks")


def _moment(as_of: str | None) -> datetime:
    if as_of is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(as_of)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_announce_expiring(
    runtime: Runtime, now: datetime, *, batch_size: int = 5000, send: bool = True
) -> int:
    """Announce every lot expiring within the configured days; returns how many events."""
    days = runtime.settings.webhook_expiring_days
    announced = 0
    cursor: tuple[datetime, int] | None = None
    while True:
        async with runtime.transaction() as session:
            batch = await service.announce_expiring_batch(
                session, now, days, after=cursor, limit=batch_size
            )
        announced += batch.announced
        if send and batch.delivery_ids:
            try:
                await enqueue_deliveries(batch.delivery_ids)
            except Exception:  # the sweep delivers them
                log.warning("could not enqueue points.expiring deliveries")
        if batch.cursor is None or batch.scanned < batch_size:
            break
        cursor = batch.cursor
    log.info("points.expiring announced", events=announced)
    return announced


async def run_prune(runtime: Runtime, now: datetime, *, batch_size: int = 5000) -> int:
    before = now - timedelta(days=runtime.settings.webhook_retention_days)
    pruned = 0
    while True:
        async with runtime.transaction() as session:
            count = await service.prune_batch(session, before, batch_size)
        pruned += count
        if count < batch_size:
            break
    log.info("webhook events pruned", events=pruned)
    return pruned


@actor("webhooks.deliver", max_retries=0, time_limit=10 * 60 * 1000)
async def deliver(delivery_ids: list[int]) -> int:
    """Attempt these deliveries (those still pending and due); returns the attempts made."""
    results = await delivery.deliver(await worker_runtime(), delivery_ids)
    return len(results)


@actor("webhooks.retry_due", max_retries=0, time_limit=10 * 60 * 1000)
async def retry_due() -> int:
    """The sweep: attempt every due delivery nobody is attempting."""
    return await delivery.deliver_due(await worker_runtime())


@actor("webhooks.announce_expiring", max_retries=3, time_limit=30 * 60 * 1000)
async def announce_expiring(as_of: str | None = None) -> int:
    return await run_announce_expiring(await worker_runtime(), _moment(as_of))


@actor("webhooks.prune", max_retries=3, time_limit=30 * 60 * 1000)
async def prune(as_of: str | None = None) -> int:
    return await run_prune(await worker_runtime(), _moment(as_of))
