"""Process-wide resources (engine, session factory, Redis), built once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.db import make_engine, make_sessionmaker
from server.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError("Runtime needs resolved URLs (see server.embedded.resolve_services)")
        engine = make_engine(settings.database_url, settings.db_pool_size, settings.db_max_overflow)
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        return cls(settings, engine, make_sessionmaker(engine), client)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session
