"""Ledger test helpers: members, sessions, row counts and a clock that moves lots forward."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Member
from server.runtime import Runtime

_serial = itertools.count(1)

LEDGER_TABLES = ("transactions", "postings", "lots", "lot_allocations", "pending_credits")


async def create_members(runtime: Runtime, count: int) -> list[int]:
    """Insert ``count`` members directly (the members service is not under test here)."""
    rows = []
    for _ in range(count):
        n = next(_serial)
        rows.append({"external_id": f"ext-{n}", "referral_code": f"ref-{n}"})
    async with runtime.transaction() as session:
        result = await session.execute(insert(Member).returning(Member.id), rows)
        return [row[0] for row in result]


async def row_counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.transaction() as session:
        counts = {}
        for table in LEDGER_TABLES:
            counts[table] = int(
                (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
        return counts


async def advance_clock(runtime: Runtime, days: float) -> None:
    """Pretend ``days`` pass: move every lot expiry and pending release into the past."""
    async with runtime.transaction() as session:
        shift = {"d": days}
        await session.execute(
            text("UPDATE lots SET expires_at = expires_at - make_interval(secs => :d * 86400)"),
            shift,
        )
        await session.execute(
            text(
                "UPDATE pending_credits"
                " SET available_at = available_at - make_interval(secs => :d * 86400)"
            ),
            shift,
        )


async def member_balance(runtime: Runtime, member_id: int, currency: str = "points") -> int:
    from ledger.service import balances

    async with runtime.transaction() as session:
        return (await balances(session, member_id, currency)).available


async def account_balance(runtime: Runtime, key: str) -> int:
    """A stored balance, or the derived one for unbounded system accounts."""
    async with runtime.transaction() as session:
        value = await session.execute(
            text(
                "SELECT CASE WHEN a.allow_negative"
                " THEN (SELECT COALESCE(sum(amount), 0) FROM postings WHERE account_id = a.id)"
                " ELSE a.balance END FROM accounts a WHERE a.key = :k"
            ),
            {"k": key},
        )
        return int(value.scalar_one_or_none() or 0)


async def run(runtime: Runtime, op: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """Run one operation in its own committed transaction."""
    async with runtime.transaction() as session:
        return await op(session)


@pytest.fixture
async def session(runtime: Runtime) -> AsyncIterator[AsyncSession]:
    async with runtime.transaction() as s:
        yield s
