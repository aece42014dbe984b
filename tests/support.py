"""Helpers shared by the tests: resetting state, verifying the ledger's invariants, and
watching the statements the hot paths send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from server import rawsql
from server.cache import clear_all
from server.db import plain_dsn

# Rows the migrations insert and the tests must keep (reference data such as system accounts).
KEEP_TABLES = {"alembic_version"}


async def reset_database(url: str) -> None:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            if r["tablename"] not in KEEP_TABLES
        ]
        if tables:
            quoted = ", ".join(f'"{t}"' for t in tables)
            await conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
        # A domain may re-create its reference rows (system accounts, program settings).
        await conn.execute(
            "DO $$ BEGIN IF to_regprocedure('questline_seed_reference_data()') IS NOT NULL "
            "THEN PERFORM questline_seed_reference_data(); END IF; END $$"
        )
    finally:
        await conn.close()
    clear_all()  # per-process caches must not outlive the rows they copied


async def reset_redis(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def verify_ledger(url: str) -> None:
    """Run the ledger's own verification; fail the test on any violation."""
    try:
        from ledger.verify import verify_database_url
    except ImportError:  # before the ledger exists there is nothing to verify
        return
    report = await verify_database_url(url)
    assert report.ok, report.render()


def record_statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Every statement sent through ``server.rawsql`` from now on: (SQL, arguments)."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def recording(original: Callable[..., Any]) -> Callable[..., Any]:
        async def call(session: Any, sql: str, *args: Any) -> Any:
            sent.append((sql, args))
            return await original(session, sql, *args)

        return call

    for name in ("fetch", "fetchrow", "fetchval", "execute"):
        monkeypatch.setattr(rawsql, name, recording(getattr(rawsql, name)))
    return sent


def record_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every query any asyncpg connection sends from now on, through SQLAlchemy or
    not, BEGIN and COMMIT included (each is a round trip to PostgreSQL)."""
    sent: list[str] = []
    simple = asyncpg.Connection.execute
    extended = asyncpg.Connection._execute

    async def execute(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # with arguments it goes through _execute, recorded there
            sent.append(query)
        return await simple(self, query, *args, **kwargs)

    async def _execute(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query)
        return await extended(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    monkeypatch.setattr(asyncpg.Connection, "_execute", _execute)
    return sent
