"""The scheduler: exactly one leader among several, fail-over, and sending by actor name."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from dramatiq.brokers.redis import RedisBroker

from server.broker import ACTOR_NAME_PATTERN
from server.db import plain_dsn
from server.scheduler import (
    LEADER_LOCK_KEY,
    PERIODIC_JOBS,
    PeriodicJob,
    Scheduler,
    broker_sender,
)
from server.settings import Settings


def fast_scheduler(settings: Settings, jobs: list[PeriodicJob], send: Recorder) -> Scheduler:
    """A scheduler that retries and checks every 0.2 s instead of every few seconds."""
    assert settings.database_url
    return Scheduler(settings.database_url, jobs, send=send, retry_interval=0.2, check_interval=0.2)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, job: PeriodicJob) -> None:
        self.sent.append(job.actor_name)


@contextlib.asynccontextmanager
async def running(schedulers: list[Scheduler]) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def leaders(schedulers: list[Scheduler]) -> list[Scheduler]:
    return [s for s in schedulers if s.is_leader]


def test_the_timetable_is_plain_data() -> None:
    names = [job.actor_name for job in PERIODIC_JOBS]
    assert "ledger.settle_expirations" in names
    assert "ledger.vest_pending" in names
    assert len(names) == len(set(names))
    for job in PERIODIC_JOBS:
        assert ACTOR_NAME_PATTERN.fullmatch(job.actor_name)
        job.trigger(ZoneInfo("Europe/Paris"))  # a valid timetable
    with pytest.raises(ValueError, match="exactly one"):
        PeriodicJob("ledger.vest_pending")
    with pytest.raises(ValueError, match="exactly one"):
        PeriodicJob("ledger.vest_pending", cron="0 * * * *", every=timedelta(hours=1))


def test_hourly_jobs_follow_the_program_timezone() -> None:
    kathmandu = ZoneInfo("Asia/Kathmandu")  # UTC+05:45: "minute 5" is not minute 5 in UTC
    trigger = PeriodicJob("ledger.vest_pending", cron="5 * * * *").trigger(kathmandu)
    fire = trigger.get_next_fire_time(None, datetime(2026, 1, 1, 12, 0, tzinfo=kathmandu))
    assert fire is not None and fire.tzinfo is not None
    assert fire.astimezone(kathmandu).minute == 5
    assert fire.astimezone(ZoneInfo("UTC")).minute == 20


async def test_exactly_one_of_two_schedulers_leads_and_sends(settings: Settings) -> None:
    assert settings.database_url
    job = PeriodicJob("system.ping", every=timedelta(milliseconds=300))
    recorders = [Recorder(), Recorder()]
    schedulers = [fast_scheduler(settings, [job], rec) for rec in recorders]
    async with running(schedulers):
        await eventually(lambda: len(leaders(schedulers)) == 1)
        for _ in range(20):  # and it stays that way
            assert len(leaders(schedulers)) == 1
            await asyncio.sleep(0.05)
        await eventually(lambda: sum(len(r.sent) for r in recorders) >= 2)
        leader = schedulers.index(leaders(schedulers)[0])
        assert recorders[leader].sent and not recorders[1 - leader].sent


async def test_the_standby_takes_over_when_the_leader_connection_dies(
    settings: Settings,
) -> None:
    assert settings.database_url
    job = PeriodicJob("system.ping", every=timedelta(milliseconds=200))
    recorders = [Recorder(), Recorder()]
    schedulers = [fast_scheduler(settings, [job], rec) for rec in recorders]
    async with running(schedulers):
        await eventually(lambda: len(leaders(schedulers)) == 1)
        first = leaders(schedulers)[0]
        other = schedulers[1 - schedulers.index(first)]
        assert first.lock.backend_pid is not None

        admin = await asyncpg.connect(plain_dsn(settings.database_url))
        try:  # the leader's database session dies (a crash, a network cut, a restart)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first.lock.backend_pid)
        finally:
            await admin.close()

        await eventually(lambda: other.is_leader and not first.is_leader)
        sent_before = len(recorders[schedulers.index(other)].sent)
        await eventually(lambda: len(recorders[schedulers.index(other)].sent) > sent_before)
        for _ in range(10):
            assert leaders(schedulers) == [other]
            await asyncio.sleep(0.05)


async def test_a_stopped_leader_hands_over_at_once(settings: Settings) -> None:
    assert settings.database_url
    a = fast_scheduler(settings, [], Recorder())
    b = fast_scheduler(settings, [], Recorder())
    stop_a = asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    await eventually(lambda: a.is_leader)
    async with running([b]):
        await asyncio.sleep(0.5)
        assert not b.is_leader
        stop_a.set()
        await asyncio.wait_for(task_a, 10)
        await eventually(lambda: b.is_leader)


async def test_the_lock_is_a_postgres_advisory_lock(settings: Settings) -> None:
    assert settings.database_url
    scheduler = fast_scheduler(settings, [], Recorder())
    async with running([scheduler]):
        await eventually(lambda: scheduler.is_leader)
        conn = await asyncpg.connect(plain_dsn(settings.database_url))
        try:
            assert not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY)
        finally:
            await conn.close()


async def test_the_broker_sender_enqueues_by_actor_name(settings: Settings) -> None:
    send, jobs = broker_sender(
        [
            PeriodicJob("system.ping", every=timedelta(hours=1), kwargs={"key": "k", "value": "v"}),
            PeriodicJob("nothing.here", every=timedelta(hours=1)),
        ]
    )
    assert [job.actor_name for job in jobs] == ["system.ping"]  # unknown actors are skipped
    from server.tasks_entry import broker

    assert isinstance(broker, RedisBroker)
    before = broker.client.hlen("dramatiq:default.msgs")
    await send(jobs[0])
    assert broker.client.hlen("dramatiq:default.msgs") == before + 1
