"""The per-request GraphQL context: who is calling, database access, DataLoaders, hooks.

Reads share one session per request, used by one resolver at a time (an ``AsyncSession`` is
not safe for concurrent use, and GraphQL resolves sibling fields concurrently). The hottest
reads (members, balances, tier progress, leaderboard faces) skip SQLAlchemy: ``querying()``
hands out one plain asyncpg connection per request from ``Runtime.read_pool``, under the same
one-at-a-time rule, for the ``server.rawsql`` helpers. Mutations open
their own transaction with ``transaction()``; work that must only happen once the data is
durable goes into ``server.runtime.after_commit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from server.auth import ANONYMOUS, Principal
from server.db import guarded
from server.runtime import Runtime

LoaderT = TypeVar("LoaderT", bound=DataLoader[Any, Any])


@dataclass
class Context:
    runtime: Runtime
    request: Any = None
    response: Any = None
    principal: Principal = ANONYMOUS
    connection_params: dict[str, Any] | None = None  # set by strawberry for WebSockets
    _loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)
    _read_session: AsyncSession | None = None
    _read_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _read_interrupted: bool = False
    _raw: Any = None  # the request's asyncpg connection (querying), once acquired
    _raw_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False

    def loader(self, name: str, factory: Callable[[Context], LoaderT]) -> LoaderT:
        """The request's DataLoader called ``name``, created on first use."""
        existing = self._loaders.get(name)
        if existing is None:
            existing = self._loaders[name] = factory(self)
        return existing  # type: ignore[return-value]

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """The request's read session, for one resolver at a time."""
        if self._closed:
            # A DataLoader batch can still run after the operation ended (a field error ends
            # it early): it gets a session of its own, closed right after.
            async with self.runtime.read_sessionmaker() as session:
                try:
                    yield session
                except asyncio.CancelledError:
                    await session.invalidate()  # mid-query: never back to the pool
                    raise
            return
        async with self._read_lock:
            if self._read_session is None:
                self._read_session = self.runtime.read_sessionmaker()
            try:
                yield self._read_session
            except asyncio.CancelledError:
                # A field error elsewhere can cancel this resolver in the middle of a query:
                # its connection is then mid-protocol and must not go back to the pool.
                self._read_interrupted = True
                raise

    @asynccontextmanager
    async def querying(self) -> AsyncIterator[Any]:
        """The request's plain asyncpg connection (autocommit), for one resolver at a time."""
        pool = self.runtime.read_pool
        if self._closed:  # as in reading(): a late DataLoader batch gets its own
            async with pool.acquire() as connection, guarded(pool, connection):
                yield connection
            return
        async with self._raw_lock:
            if self._raw is None:
                self._raw = await pool.acquire()
            async with guarded(pool, self._raw):
                yield self._raw

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A new session in one transaction (see ``Runtime.transaction``)."""
        async with self.runtime.transaction() as session:
            yield session
        self.forget_loaded()

    def forget_loaded(self) -> None:
        """Drop the DataLoaders' objects: after a write, those loaded before may be stale."""
        self._loaders.clear()

    async def close(self) -> None:
        """Return the read connections once no resolver uses them; a connection whose
        query was interrupted is discarded instead (handed back mid-query it would keep its
        snapshot and locks in the pool)."""
        async with self._raw_lock:
            self._closed = True
            if self._raw is not None:
                await self.runtime.read_pool.release(self._raw)
                self._raw = None
        async with self._read_lock:
            self._closed = True
            if self._read_session is not None:
                if self._read_interrupted:
                    await self._read_session.invalidate()  # discard the connection
                else:
                    await self._read_session.close()
                self._read_session = None
        # The loaders hold the context (their batch functions close over it): dropping them
        # breaks that cycle, so the request's objects are freed as soon as it ends rather
        # than by the cyclic garbage collector (a loader still batching keeps working).
        self._loaders.clear()
