"""Shared by the badge, title, campaign and referral tests: members, and operations fired all
at once over separate connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import DomainError
from server.runtime import Runtime
from tests.members.helpers import make_member

Op = Callable[[AsyncSession], Awaitable[Any]]


async def make_members(runtime: Runtime, prefix: str, count: int) -> list[int]:
    return [await make_member(runtime, f"{prefix}-{index}") for index in range(count)]


async def all_at_once(runtime: Runtime, ops: list[Op]) -> list[Any]:
    """Run each op in its own transaction (its own connection); every transaction has
    started before any op runs. Returns each op's result, or the DomainError it raised (its
    transaction then rolled back)."""
    started = 0
    everyone_in = asyncio.Event()

    async def one(op: Op) -> Any:
        nonlocal started
        try:
            async with runtime.transaction() as session:
                await session.execute(text("SELECT 1"))  # hold a connection, in a transaction
                started += 1
                if started == len(ops):
                    everyone_in.set()
                await everyone_in.wait()
                return await op(session)
        except DomainError as error:
            return error

    return await asyncio.wait_for(asyncio.gather(*(one(op) for op in ops)), timeout=60)
