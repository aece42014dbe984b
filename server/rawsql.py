"""Hot-path SQL straight on the session's asyncpg connection.

``session.execute`` costs roughly 0.1 to 0.5 ms of Python per statement (statement objects,
compilation cache look-ups, result processing); on the paths every request takes, that is
more than the database's own work. These helpers send plain SQL with ``$n`` parameters on the
same connection, inside the session's current transaction, and asyncpg caches the prepared
statement per connection. Use them for hot paths only; everything else reads better as
SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def driver(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session``, inside the session's current transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def fetchrow(session: AsyncSession, sql: str, *args: Any) -> Any:
    """The first row (an ``asyncpg.Record``) of ``sql``, or None."""
    return await (await driver(session)).fetchrow(sql, *args)


async def fetch(session: AsyncSession, sql: str, *args: Any) -> list[Any]:
    return list(await (await driver(session)).fetch(sql, *args))


async def fetchval(session: AsyncSession, sql: str, *args: Any) -> Any:
    return await (await driver(session)).fetchval(sql, *args)


async def execute(session: AsyncSession, sql: str, *args: Any) -> str:
    result: str = await (await driver(session)).execute(sql, *args)
    return result
