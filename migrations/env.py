"""Alembic environment: runs migrations over asyncpg.

The URL comes from ``config.attributes["database_url"]`` (set by ``server.migrate``), else from
``QUESTLINE_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from server.all_models import metadata
from server.db import to_async_url

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("QUESTLINE_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "no database URL: use `questline migrate`, which starts the embedded one"
        )
    return to_async_url(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
