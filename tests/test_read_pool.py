"""What a failure while using a read-pool connection does to the pool (``server.db.guarded``),
for request reads (``Context.querying``) and one-statement mutations (``Runtime.autocommit``)
alike: a connection cut off mid-statement never goes back; a lost server has every idle
connection of the pool replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import pytest

from schema.context import Context
from server.db import plain_dsn
from server.errors import is_unavailable
from server.runtime import Runtime


async def _idle_backend_pid(runtime: Runtime) -> int:
    async with runtime.read_pool.acquire() as connection:
        pid: int = connection.get_server_pid()
    return pid


async def _every_pooled_pid(runtime: Runtime) -> set[int]:
    """The backends of all the pool's connections (every one of its slots checked out)."""
    pool = runtime.read_pool
    taken = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        return {connection.get_server_pid() for connection in taken}
    finally:
        for connection in taken:
            await pool.release(connection)


async def test_a_lost_server_has_the_idle_connections_replaced(
    runtime: Runtime, database_url: str
) -> None:
    async with runtime.read_pool.acquire() as a, runtime.read_pool.acquire() as b:
        idle = {a.get_server_pid(), b.get_server_pid()}  # both go back to the pool, idle
    admin = await asyncpg.connect(plain_dsn(database_url))
    try:
        with pytest.raises(Exception) as raised:
            async with runtime.autocommit() as unit:
                mine = unit.connection.get_server_pid()
                running = asyncio.create_task(unit.connection.execute("SELECT pg_sleep(5)"))
                await _until_running(admin, mine)
                # what a server shutdown does to each backend: 57P01 to the running statement
                await admin.execute("SELECT pg_terminate_backend($1)", mine)
                await running
        assert is_unavailable(raised.value)
        # the other idle connection was not cut off, yet it is replaced on its next use
        assert await _idle_backend_pid(runtime) not in idle
        assert await _idle_backend_pid(runtime) not in idle
    finally:
        await admin.close()


async def _until_running(admin: asyncpg.Connection, pid: int) -> None:
    for _ in range(500):
        state = await admin.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        if state == "active":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never started its statement")


async def _cancelled_mid_statement(use: Callable[[], AbstractAsyncContextManager[Any]]) -> int:
    """Cancel a statement running on the connection ``use()`` gives; its backend's pid."""
    started = asyncio.Event()
    pids: list[int] = []

    async def slow() -> None:
        async with use() as connection:
            pids.append(connection.get_server_pid())
            started.set()
            await connection.execute("SELECT pg_sleep(2)")

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.1)  # the statement is running on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return pids[0]


async def test_a_statement_cut_off_by_cancellation_closes_its_connection(
    runtime: Runtime,
) -> None:
    @asynccontextmanager
    async def autocommit_connection() -> AsyncIterator[Any]:
        async with runtime.autocommit() as unit:
            yield unit.connection

    pid = await _cancelled_mid_statement(autocommit_connection)
    assert pid not in await _every_pooled_pid(runtime)


async def test_a_request_read_cut_off_by_cancellation_closes_its_connection(
    runtime: Runtime,
) -> None:
    context = Context(runtime=runtime)
    pid = await _cancelled_mid_statement(context.querying)
    await context.close()
    assert pid not in await _every_pooled_pid(runtime)


async def test_a_connection_the_server_closed_while_idle_fails_as_unavailable(
    runtime: Runtime, database_url: str
) -> None:
    """The server's goodbye reaching an idle pooled connection just before its next statement
    makes asyncpg fail that statement in one of several ways (one is an internal protocol
    error, about one try in twenty): every one is reported as unavailability."""
    admin = await asyncpg.connect(plain_dsn(database_url))
    failures: list[BaseException] = []
    try:
        for attempt in range(200):
            try:
                async with runtime.autocommit() as unit:
                    await admin.execute(
                        "SELECT pg_terminate_backend($1)", unit.connection.get_server_pid()
                    )
                    await unit.connection.fetchval(f"SELECT {attempt}")  # a new statement
            except Exception as error:
                failures.append(error)
    finally:
        await admin.close()
    assert len(failures) == 200
    assert [f for f in failures if not is_unavailable(f)] == []
