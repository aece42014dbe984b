"""Models and migrations agree: ``alembic upgrade head`` yields exactly the models' schema."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from server.all_models import metadata


def test_models_match_migrated_database(database_url: str) -> None:
    async def diff() -> list[Any]:
        engine = create_async_engine(database_url)
        async with engine.connect() as connection:
            found = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
        await engine.dispose()
        return list(found)

    assert asyncio.run(diff()) == []
