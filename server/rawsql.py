"""Hot-path SQL straight on the session's asyncpg connection.

``session.execute`` costs roughly 0.1 to 0.5 ms of Python per statement (statement objects,
compilation cache look-ups, result processing); on the paths every request takes, that is
more than the database's own work. These helpers send plain SQL with ``$n`` parameters on the
same connection, inside the session's current transaction, and asyncpg caches the prepared
statement per connection. Use them for hot paths only; everything else reads better as
SQLAlchemy.

Each helper takes either an ``AsyncSession`` (its connection, inside its transaction) or a
plain asyncpg connection (``schema.context.Context.querying``), so the same query function
serves a mutation's transaction and a request's hot reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

_DRIVER = "rawsql.driver_connection"

# An AsyncSession, an Autocommit, or an asyncpg connection (asyncpg has no type hints: Any).
Queryable = AsyncSession | Any


@dataclass
class Autocommit:
    """Work whose writes are ONE statement, run on a plain asyncpg connection in autocommit
    mode (``Runtime.autocommit``): that statement is its own transaction, so the work costs
    no BEGIN and no COMMIT round trip and no SQLAlchemy session. Reads before it see what was
    committed when they ran, as every statement under READ COMMITTED does. Signals emitted
    into ``info`` are delivered once the work returns (its one write has committed)."""

    connection: Any
    info: dict[Any, Any] = field(default_factory=dict)


async def driver(session: Queryable) -> Any:
    """The asyncpg connection under ``session``, inside the session's current transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, just before the first statement *it*
    executes; a raw call that came first would run outside any transaction and commit on its
    own. So the adapter's transaction is begun here (the BEGIN SQLAlchemy would have sent).
    The connection is then cached in ``session.info`` for as long as the session's transaction
    lasts (one transaction holds one connection): asking SQLAlchemy for it costs ~40 us of
    client CPU per call. A plain asyncpg connection is returned as it is."""
    if isinstance(session, Autocommit):
        return session.connection
    if not isinstance(session, AsyncSession):
        return session
    current = session.sync_session.get_transaction()
    cached = session.info.get(_DRIVER)
    if current is not None and cached is not None and cached[0] is current:
        return cached[1]
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await _begin(raw.dbapi_connection)
    session.info[_DRIVER] = (session.sync_session.get_transaction(), raw.driver_connection)
    return raw.driver_connection


async def _begin(adapted: Any) -> None:
    """Start the adapter's transaction unless it is running or the connection autocommits.

    Uses the adapter's own ``_start_transaction`` (SQLAlchemy 2.0/2.1, the pinned range), so
    SQLAlchemy knows about the transaction and commits or rolls it back as usual."""
    if getattr(adapted, "isolation_level", None) == "autocommit":
        return
    if getattr(adapted, "_transaction", None) is not None:
        return
    start = getattr(adapted, "_start_transaction", None)
    if start is None:  # pragma: no cover - an adapter without it: let SQLAlchemy begin
        raise RuntimeError("unsupported SQLAlchemy asyncpg adapter: cannot begin a transaction")
    await start()


async def fetchrow(session: Queryable, sql: str, *args: Any) -> Any:
    """The first row (an ``asyncpg.Record``) of ``sql``, or None."""
    return await (await driver(session)).fetchrow(sql, *args)


async def fetch(session: Queryable, sql: str, *args: Any) -> list[Any]:
    return list(await (await driver(session)).fetch(sql, *args))


async def fetchval(session: Queryable, sql: str, *args: Any) -> Any:
    return await (await driver(session)).fetchval(sql, *args)


async def execute(session: Queryable, sql: str, *args: Any) -> str:
    result: str = await (await driver(session)).execute(sql, *args)
    return result
