"""SQLAlchemy wiring: the declarative base shared by every domain, engines and sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.errors import is_unavailable

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def to_async_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs too and point them at asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def make_engine(url: str, pool_size: int = 20, max_overflow: int = 10) -> AsyncEngine:
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping (a round trip per checkout): a connection that died with the server
        # fails its next statement, SQLAlchemy then invalidates the whole pool and the
        # following requests reconnect.
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "questline"}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def plain_dsn(database_url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL (``postgresql+asyncpg://`` -> ``postgresql://``)."""
    return (
        make_url(to_async_url(database_url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


async def _keep_state(connection: asyncpg.Connection) -> None:
    """The read pool's reset: nothing. Its connections only ever run single autocommit
    statements, reads and the one-statement mutations (no session settings, no LISTEN, no
    advisory locks), and asyncpg still rolls back a transaction left open; the default reset
    would cost a round trip per request."""


async def make_read_pool(database_url: str, size: int) -> asyncpg.Pool:
    """A plain asyncpg pool for the hot read paths of requests (see ``schema.context``) and
    the mutations that are one autocommit statement (``Runtime.autocommit``).

    Checking a connection out of SQLAlchemy's pool into an ``AsyncSession`` and back costs
    about half a millisecond of client CPU, as much as a whole cached GraphQL query; asyncpg's
    own pool costs a few tens of microseconds. Connections are opened on demand."""
    pool = await asyncpg.create_pool(
        plain_dsn(database_url),
        min_size=0,
        max_size=size,
        reset=_keep_state,
        max_inactive_connection_lifetime=300.0,
        server_settings={"application_name": "questline-read"},
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def guarded(pool: asyncpg.Pool, connection: asyncpg.Connection) -> AsyncIterator[None]:
    """Use ``connection`` of the read ``pool``, and make what a failure means for the pool
    happen: a connection interrupted mid-query is mid-protocol and is closed, never reused;
    a server that went away (a restart) has killed every idle connection too, so the pool is
    told to replace them all rather than fail one request each.

    A statement sent just as the server's goodbye arrives on an idle connection fails with
    asyncpg's ``InternalClientError`` ("cannot switch to state ...", the protocol state the
    goodbye left) rather than a connection error (seen in about one try in twenty); with the
    connection closed, it is reported as the lost connection it is."""
    try:
        yield
    except asyncio.CancelledError:
        connection.terminate()
        raise
    except Exception as error:
        if is_unavailable(error):
            await pool.expire_connections()
            raise
        if isinstance(error, asyncpg.exceptions.InternalClientError) and connection.is_closed():
            await pool.expire_connections()
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "the server closed the connection"
            ) from error
        raise
