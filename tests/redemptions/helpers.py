"""Shared set-up for the redemption tests: members with points, items, and a snapshot of
everything a redemption could write (to prove that a refusal wrote nothing)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from ledger import service as ledger
from members.models import Member
from redemptions import catalog, service
from redemptions.catalog import CatalogItemInput
from redemptions.service import RedeemOutcome
from server.errors import DomainError
from server.rawsql import Autocommit
from server.runtime import Runtime

T = TypeVar("T")
_serial = itertools.count(1)

# Every table a redemption, a cancellation or a draw writes to.
WRITTEN_TABLES = (
    "transactions",
    "postings",
    "lots",
    "lot_allocations",
    "redemptions",
    "lottery_entries",
    "lottery_draws",
)


async def create_members(runtime: Runtime, count: int, points: int = 0) -> list[int]:
    """Insert members directly (the members service is not under test here), each granted
    ``points`` that never expire."""
    rows = []
    for _ in range(count):
        n = next(_serial)
        rows.append({"external_id": f"m-{n}", "referral_code": f"R{n:09d}"})
    async with runtime.transaction() as session:
        result = await session.execute(insert(Member).returning(Member.id), rows)
        ids = [row[0] for row in result]
    if points:
        async with runtime.transaction() as session:
            for member_id in ids:
                await ledger.grant(session, member_id, points, idempotency_key=f"seed:{member_id}")
    return ids


async def external_id(runtime: Runtime, member_id: int) -> str:
    async with runtime.transaction() as session:
        value = await session.scalar(
            text("SELECT external_id FROM members WHERE id = :id"), {"id": member_id}
        )
        return str(value)


async def external_ids(runtime: Runtime, member_ids: list[int]) -> dict[int, str]:
    async with runtime.transaction() as session:
        rows = await session.execute(
            text("SELECT id, external_id FROM members WHERE id = ANY(:ids)"), {"ids": member_ids}
        )
        return {int(i): str(e) for i, e in rows}


async def make_item(runtime: Runtime, key: str = "mug", **fields: Any) -> int:
    fields.setdefault("name", key.title())
    fields.setdefault("cost", 100)
    if "stock" in fields:
        fields["set_stock"] = True
    async with runtime.transaction() as session:
        outcome = await catalog.upsert_item(session, CatalogItemInput(key=key, **fields))
        return outcome.item.id


# How ``redeem`` runs: "transaction" (``Runtime.transaction``) or "autocommit"
# (``Runtime.autocommit``, as the API runs a redemption when no webhook wants its events).
# The ``redeem_path`` fixture (tests/redemptions/conftest.py) runs a module's tests both ways.
REDEEM_PATH = {"mode": "transaction"}


async def redeem(
    runtime: Runtime,
    member_external_id: str,
    item_key: str,
    key: str,
    quantity: int = 1,
    now: datetime | None = None,
) -> RedeemOutcome | DomainError:
    """One redemption on its own (a transaction, or one autocommit statement); returns the
    outcome or the refusal (including one from the commit: the stock is taken there)."""

    async def run(target: AsyncSession | Autocommit) -> RedeemOutcome:
        return await service.redeem(
            target,
            external_id=member_external_id,
            item_key=item_key,
            quantity=quantity,
            idempotency_key=key,
            now=now,
        )

    try:
        if REDEEM_PATH["mode"] == "autocommit":
            async with runtime.autocommit() as unit:
                return await run(unit)
        async with runtime.transaction() as session:
            return await run(session)
    except DomainError as error:
        return error
    except DBAPIError as error:
        refusal = service.database_refusal(error)
        if refusal is None:
            raise
        return refusal


async def in_transaction(runtime: Runtime, op: Callable[[Any], Awaitable[T]]) -> T | DomainError:
    try:
        async with runtime.transaction() as session:
            return await op(session)
    except DomainError as error:
        return error


async def gather_all(coroutines: Sequence[Awaitable[T]]) -> list[T]:
    async with asyncio.timeout(120):
        return await asyncio.gather(*coroutines)


async def snapshot(runtime: Runtime) -> dict[str, Any]:
    """Row counts of every written table, stock of every item, balances and lots, coupon
    assignments and last activity: equal before and after means nothing was written."""
    async with runtime.transaction() as session:
        state: dict[str, Any] = {}
        for table in WRITTEN_TABLES:
            state[table] = (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar()
        queries = {
            "stock": "SELECT key, stock, drawn_at FROM catalog_items ORDER BY id",
            "balances": "SELECT id, balance FROM accounts ORDER BY id",
            "lots": "SELECT id, remaining, expired FROM lots ORDER BY id",
            "codes": "SELECT id, redemption_id FROM coupon_codes ORDER BY id",
            "activity": "SELECT id, last_active_at FROM members ORDER BY id",
            "statuses": "SELECT id, status, code_revealed_at FROM redemptions ORDER BY id",
        }
        for name, sql in queries.items():
            state[name] = [tuple(row) for row in await session.execute(text(sql))]
        return state


async def balance(runtime: Runtime, member_id: int) -> int:
    async with runtime.transaction() as session:
        return (await ledger.balances(session, member_id)).available


async def stock_of(runtime: Runtime, key: str) -> int | None:
    async with runtime.transaction() as session:
        value = await session.scalar(
            text("SELECT stock FROM catalog_items WHERE key = :k"), {"k": key}
        )
        return None if value is None else int(value)
