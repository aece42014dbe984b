"""Process-wide resources (engine, session factory, Redis), built once per process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server import signals
from server.db import guarded, make_engine, make_read_pool, make_sessionmaker
from server.rawsql import Autocommit
from server.settings import Settings

log = structlog.get_logger("questline.runtime")

AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the transaction of ``session`` has committed (never on rollback).

    Jobs, leaderboard updates and notifications go here: they must only ever see data that
    is durable. The session must come from ``Runtime.transaction()``.
    """
    hooks: list[AfterCommit] | None = session.info.get("after_commit")
    if hooks is None:
        raise RuntimeError("after_commit needs a session opened by Runtime.transaction()")
    hooks.append(hook)


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    # Sessions for read-only request work: autocommit, so a read costs no BEGIN/ROLLBACK
    # round trips. Never write through them (there is no transaction to make writes atomic).
    read_sessionmaker: async_sessionmaker[AsyncSession]
    # Plain asyncpg connections for the hottest reads of requests (``Context.querying``) and
    # the one-statement mutations (``autocommit``).
    read_pool: asyncpg.Pool

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError("Runtime needs resolved URLs (see server.embedded.resolve_services)")
        engine = make_engine(settings.database_url, settings.db_pool_size, settings.db_max_overflow)
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        pool = await make_read_pool(settings.database_url, settings.db_read_pool_size)
        return cls(
            settings, engine, make_sessionmaker(engine), client, make_sessionmaker(reader), pool
        )

    async def close(self) -> None:
        await self.redis.aclose()
        try:  # connections still checked out get 5 seconds to come back
            await asyncio.wait_for(self.read_pool.close(), timeout=5)
        except TimeoutError:
            self.read_pool.terminate()
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error;
        signals emitted in it are delivered, and hooks registered with ``after_commit`` run,
        only after a successful commit."""
        hooks: list[AfterCommit] = []
        async with self.sessionmaker() as session:
            session.info["after_commit"] = hooks
            async with session.begin():
                yield session
            committed = signals.take(session)
        if committed:
            await signals.deliver(committed, runtime=self)
        for hook in hooks:
            try:
                await hook()
            except Exception:  # the data is committed; a failed side effect must not undo it
                log.exception("after-commit hook failed")

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Autocommit]:
        """A plain pooled asyncpg connection in autocommit mode, for work that writes with ONE
        statement, its last (see ``server.rawsql.Autocommit``). What the work emitted is
        delivered once it has returned; a refusal raised by the statement wrote nothing and
        emitted nothing. Work that emits a topic a durable writer wants must use
        ``transaction()`` instead (``signals.durable_topics``). A statement interrupted or
        cut off by a lost server is handled as for every read-pool use (``server.db.guarded``)."""
        async with self.read_pool.acquire() as connection, guarded(self.read_pool, connection):
            work = Autocommit(connection)
            yield work
        emitted = signals.take(work)
        if emitted:
            await signals.deliver(emitted, runtime=self)
