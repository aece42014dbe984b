"""The scheduler process: sends periodic actors by name; one leader at a time.

Time-driven work (expiry settlement, vesting pending points, ...) is done by Dramatiq actors;
this process only *sends* them on a timetable (APScheduler 3, ``AsyncIOScheduler``, in the
program timezone ``QUESTLINE_TIMEZONE``). Domains add their jobs to ``PERIODIC_JOBS``.

Starting two schedulers is harmless: each one tries to take a PostgreSQL advisory lock on a
dedicated connection (``pg_try_advisory_lock``), and only the holder schedules jobs. The lock
belongs to that database session, so it is released the moment the leader's process or
connection dies; a standby retries every few seconds and takes over. A leader checks its
connection regularly and before every send, and steps down when it is gone. In the short window
between a leader's connection dying and the leader noticing, a standby may already lead, so a
job can exceptionally be sent twice: periodic actors must be idempotent (the ledger's are).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from server.db import plain_dsn
from server.settings import Settings

log = structlog.get_logger("questline.scheduler")


@dataclass(frozen=True)
class PeriodicJob:
    """Send the actor named ``actor_name`` on a ``cron`` timetable (minute hour day month
    weekday, in the program timezone) or ``every`` interval, with ``kwargs``."""

    actor_name: str
    cron: str | None = None
    every: timedelta | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"{self.actor_name}: give exactly one of `cron` and `every`")

    def trigger(self, timezone: ZoneInfo) -> BaseTrigger:
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone=timezone)
        assert self.every is not None
        return IntervalTrigger(seconds=self.every.total_seconds(), timezone=timezone)


# The timetable, in the program timezone. A domain with time-driven work adds its actor here.
# Minutes are staggered so that jobs do not all start at once; daily jobs run at night.
PERIODIC_JOBS: list[PeriodicJob] = [
    PeriodicJob("ledger.settle_expirations", cron="5 * * * *"),
    PeriodicJob("ledger.vest_pending", cron="10 * * * *"),
    PeriodicJob("members.evaluate_tiers", cron="20 3 * * *"),
    PeriodicJob("members.scan_inactivity", cron="40 3 * * *"),
    # Hourly: each member gets theirs when their own (local) birthday starts.
    PeriodicJob("members.birthday_rewards", cron="15 * * * *"),
    # Webhooks: the delivery sweep (lost messages, trigger-written events), expiry notices.
    PeriodicJob("webhooks.retry_due", every=timedelta(minutes=1)),
    PeriodicJob("webhooks.announce_expiring", cron="25 * * * *"),
    PeriodicJob("webhooks.prune", cron="50 4 * * *"),
    # Every 5 minutes: periods end at local midnight of the PROGRAM timezone (a database
    # setting), which need not be this timetable's; closing is idempotent.
    PeriodicJob("leaderboards.close_period", cron="2-59/5 * * * *"),
    PeriodicJob("leaderboards.maintain", every=timedelta(minutes=1)),
]

# One lock per database: a stable 64-bit key derived from a readable name.
LEADER_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"questline.scheduler.leader").digest()[:8], "big", signed=True
)


# What a lost or unreachable database looks like (TimeoutError is an OSError).
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class LeaderLock:
    """A session-level advisory lock held on one dedicated connection."""

    def __init__(self, dsn: str, key: int = LEADER_LOCK_KEY, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.key = key
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._io = asyncio.Lock()  # one query at a time on the connection

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding (or trying for) the lock, for diagnostics."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def try_acquire(self) -> bool:
        async with self._io:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self.dsn,
                        timeout=self.timeout,
                        server_settings={"application_name": "questline-scheduler"},
                    )
                return bool(
                    await self._conn.fetchval(
                        "SELECT pg_try_advisory_lock($1::bigint)", self.key, timeout=self.timeout
                    )
                )
            except DATABASE_ERRORS as exc:
                log.warning("scheduler lock: database unavailable", error=str(exc))
                await self._discard()
                return False

    async def still_held(self) -> bool:
        """True while the connection holding the lock is alive (the lock lives as long)."""
        async with self._io:
            if self._conn is None or self._conn.is_closed():
                return False
            try:
                await self._conn.fetchval("SELECT 1", timeout=self.timeout)
                return True
            except DATABASE_ERRORS:
                await self._discard()
                return False

    async def release(self) -> None:
        """Close the connection, which releases the lock (also if the unlock fails)."""
        async with self._io:
            if self._conn is not None and not self._conn.is_closed():
                with contextlib.suppress(Exception):
                    await self._conn.fetchval(
                        "SELECT pg_advisory_unlock($1::bigint)", self.key, timeout=self.timeout
                    )
            await self._discard()

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.timeout)
        elif conn is not None:
            conn.terminate()


SendJob = Callable[[PeriodicJob], Awaitable[None]]


def broker_sender(jobs: Sequence[PeriodicJob]) -> tuple[SendJob, list[PeriodicJob]]:
    """A sender that enqueues on the Dramatiq broker, and the jobs whose actors exist.

    Loads every task module (so actor names resolve to their queues) and leaves out, with a
    warning, jobs whose actor is not declared: a domain that has not landed yet.
    """
    import dramatiq

    from server.broker import enqueue
    from server.tasks_entry import broker

    runnable = []
    for job in jobs:
        if job.actor_name in broker.actors:
            runnable.append(job)
        else:
            log.warning("periodic job skipped: no actor with that name", actor=job.actor_name)

    async def send(job: PeriodicJob) -> None:
        actor: dramatiq.Actor[Any, Any] = broker.get_actor(job.actor_name)
        await enqueue(actor.message_with_options(kwargs=dict(job.kwargs)))

    return send, runnable


class Scheduler:
    """Leader election plus an APScheduler that runs only while this process leads."""

    def __init__(
        self,
        database_url: str,
        jobs: Sequence[PeriodicJob],
        *,
        timezone: str = "UTC",
        send: SendJob,
        retry_interval: float = 5.0,
        check_interval: float = 2.0,
        lock_key: int = LEADER_LOCK_KEY,
    ) -> None:
        self.jobs = list(jobs)
        self.timezone = ZoneInfo(timezone)
        self.send = send
        self.retry_interval = retry_interval
        self.check_interval = check_interval
        self.lock = LeaderLock(plain_dsn(database_url), lock_key)
        self.is_leader = False
        self.sent: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Lead or stand by until ``stop`` is set."""
        log.info(
            "scheduler started",
            jobs=[job.actor_name for job in self.jobs],
            timezone=str(self.timezone),
        )
        announced_standby = False
        try:
            while not stop.is_set():
                if await self.lock.try_acquire():
                    announced_standby = False
                    await self._lead(stop)
                    if stop.is_set():
                        break
                    # Lost the lock: give a standby the first chance to take over.
                    await _wait(stop, self.retry_interval * 2)
                else:
                    if not announced_standby:
                        log.info(
                            "another scheduler leads; standing by",
                            retry_seconds=self.retry_interval,
                        )
                        announced_standby = True
                    await _wait(stop, self.retry_interval)
        finally:
            await self.lock.release()
            log.info("scheduler stopped")

    async def _lead(self, stop: asyncio.Event) -> None:
        self.is_leader = True
        log.info("scheduler is the leader", backend_pid=self.lock.backend_pid)
        aps = AsyncIOScheduler(timezone=self.timezone)
        for job in self.jobs:
            aps.add_job(
                self._fire,
                job.trigger(self.timezone),
                args=[job],
                id=job.actor_name,
                name=job.actor_name,
                coalesce=True,  # after a pause, send once, not once per missed run
                max_instances=1,
                misfire_grace_time=300,
            )
        aps.start()
        try:
            while not await _wait(stop, self.check_interval):
                if not await self.lock.still_held():
                    log.warning("scheduler lost its database connection; stepping down")
                    break
        finally:
            self.is_leader = False
            aps.shutdown(wait=False)

    async def _fire(self, job: PeriodicJob) -> None:
        if not self.is_leader or not await self.lock.still_held():
            return
        try:
            await self.send(job)
        except Exception:
            log.exception("periodic job could not be sent", actor=job.actor_name)
            return
        self.sent += 1
        log.info("periodic job sent", actor=job.actor_name)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when ``stop`` was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def run_scheduler(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the scheduler for ``settings`` (resolved URLs) until SIGINT/SIGTERM or ``stop``."""
    if not settings.database_url:
        raise RuntimeError("the scheduler needs QUESTLINE_DATABASE_URL (use `questline scheduler`)")
    send, jobs = broker_sender(PERIODIC_JOBS)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        scheduler = Scheduler(settings.database_url, jobs, timezone=settings.timezone, send=send)
        await scheduler.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main() -> None:
    """Entry point for ``python -m server.scheduler`` (a child of ``questline dev``)."""
    from server.observability import configure_logging
    from server.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run_scheduler(settings))


if __name__ == "__main__":
    main()
