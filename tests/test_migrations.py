"""Models and migrations agree: ``alembic upgrade head`` yields exactly the models' schema."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.all_models import metadata
from server.db import plain_dsn
from server.migrate import alembic_config, upgrade_head


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


VEST_COLUMNS = ["o_count", "o_amount", "o_candidates", "o_transactions"]
BATCH_SETTINGS = ["jit=off", "plan_cache_mode=force_custom_plan"]


def test_the_latest_migrations_step_down_and_up_again(database_url: str) -> None:
    """0010-0013 replace ledger functions: each downgrade restores the earlier definition and
    the upgrade brings the current one back (on a database of its own, dropped after)."""
    name = f"{make_url(database_url).database}_steps"
    scratch_url = make_url(database_url).set(database=name).render_as_string(False)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def definitions() -> tuple[list[str], list[str]]:
        """ledger_post_batch's settings, and the columns ledger_vest_due returns."""
        conn = await asyncpg.connect(plain_dsn(scratch_url))
        try:
            settings = await conn.fetchval(
                "SELECT proconfig FROM pg_proc WHERE proname = 'ledger_post_batch'"
            )
            names = await conn.fetchval(
                "SELECT proargnames FROM pg_proc WHERE proname = 'ledger_vest_due'"
            )
        finally:
            await conn.close()
        return sorted(settings or []), [n for n in names if n.startswith("o_")]

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade_head(scratch_url)
        assert asyncio.run(definitions()) == (BATCH_SETTINGS, VEST_COLUMNS)
        command.downgrade(alembic_config(scratch_url), "0009")
        assert asyncio.run(definitions()) == (["jit=off"], VEST_COLUMNS[:3])
        upgrade_head(scratch_url)
        assert asyncio.run(definitions()) == (BATCH_SETTINGS, VEST_COLUMNS)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
