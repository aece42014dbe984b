"""Redemptions under concurrency: each one in its own transaction (or its own autocommit
statement) on its own pooled connection, all fired at once with asyncio.gather. The ledger is
verified after each test."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import text

from redemptions.service import RedeemOutcome
from server.errors import DomainError
from server.runtime import Runtime
from tests.redemptions.helpers import (
    balance,
    create_members,
    external_ids,
    gather_all,
    make_item,
    redeem,
    stock_of,
)

pytestmark = pytest.mark.usefixtures("redeem_path")


def outcomes(results: list[RedeemOutcome | DomainError]) -> Counter[str]:
    return Counter("ok" if isinstance(result, RedeemOutcome) else result.code for result in results)


async def test_two_hundred_members_race_for_ten_units(runtime: Runtime) -> None:
    members = await create_members(runtime, 200, points=1000)
    names = await external_ids(runtime, members)
    await make_item(runtime, "console", cost=300, stock=10)
    results = await gather_all([redeem(runtime, names[m], "console", f"race-{m}") for m in members])
    assert outcomes(results) == {"ok": 10, "OUT_OF_STOCK": 190}
    assert await stock_of(runtime, "console") == 0
    winners = {r.redemption.member_id for r in results if isinstance(r, RedeemOutcome)}
    assert len(winners) == 10
    for member in members:  # only the winners paid
        assert await balance(runtime, member) == (700 if member in winners else 1000)
    async with runtime.transaction() as session:
        spends = await session.scalar(text("SELECT count(*) FROM transactions WHERE kind='spend'"))
    assert spends == 10


async def test_one_member_fifty_requests_points_for_five(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=500)
    name = (await external_ids(runtime, [member]))[member]
    await make_item(runtime, "coffee", cost=100)
    results = await gather_all([redeem(runtime, name, "coffee", f"k-{n}") for n in range(50)])
    assert outcomes(results) == {"ok": 5, "INSUFFICIENT_FUNDS": 45}
    assert await balance(runtime, member) == 0


async def test_per_member_limit_holds_under_concurrency(runtime: Runtime) -> None:
    members = await create_members(runtime, 4, points=10_000)
    names = await external_ids(runtime, members)
    await make_item(runtime, "tote", cost=10, per_member_limit=3)
    results = await gather_all(
        [redeem(runtime, names[m], "tote", f"k-{n}") for m in members for n in range(15)]
    )
    assert outcomes(results) == {"ok": 12, "LIMIT_REACHED": 48}
    per_member = Counter(r.redemption.member_id for r in results if isinstance(r, RedeemOutcome))
    assert per_member == dict.fromkeys(members, 3)
    for member in members:
        assert await balance(runtime, member) == 10_000 - 30


async def test_limit_counts_units_under_concurrency(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=10_000)
    name = (await external_ids(runtime, [member]))[member]
    await make_item(runtime, "tote", cost=10, per_member_limit=5)
    results = await gather_all(
        [redeem(runtime, name, "tote", f"k-{n}", quantity=2) for n in range(10)]
    )
    assert outcomes(results) == {"ok": 2, "LIMIT_REACHED": 8}  # 4 units; a third pair is 6


async def test_coupon_codes_are_unique_across_concurrent_redemptions(runtime: Runtime) -> None:
    members = await create_members(runtime, 60, points=100)
    names = await external_ids(runtime, members)
    codes = tuple(f"CODE-{n:03d}" for n in range(40))
    await make_item(runtime, "coffee", kind="COUPON", cost=10, codes=codes)
    results = await gather_all([redeem(runtime, names[m], "coffee", "k") for m in members])
    assert outcomes(results) == {"ok": 40, "OUT_OF_STOCK": 20}
    handed_out = [r.redemption.code or "" for r in results if isinstance(r, RedeemOutcome)]
    assert sorted(handed_out) == sorted(codes)  # every code once, none twice
    async with runtime.transaction() as session:
        free = await session.scalar(
            text("SELECT count(*) FROM coupon_codes WHERE redemption_id IS NULL")
        )
    assert free == 0


async def test_coupon_with_stock_and_codes_respects_both(runtime: Runtime) -> None:
    members = await create_members(runtime, 30, points=100)
    names = await external_ids(runtime, members)
    codes = tuple(f"C{n}" for n in range(20))
    await make_item(runtime, "coffee", kind="COUPON", cost=10, codes=codes, stock=8)
    results = await gather_all([redeem(runtime, names[m], "coffee", "k") for m in members])
    assert outcomes(results) == {"ok": 8, "OUT_OF_STOCK": 22}
    handed_out = [r.redemption.code for r in results if isinstance(r, RedeemOutcome)]
    assert len(set(handed_out)) == 8
    assert await stock_of(runtime, "coffee") == 0


async def test_same_key_twenty_times_redeems_once(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=1000)
    name = (await external_ids(runtime, [member]))[member]
    await make_item(runtime, "mug", cost=100, stock=50)
    results = await gather_all([redeem(runtime, name, "mug", "one-key") for _ in range(20)])
    assert all(isinstance(r, RedeemOutcome) for r in results), results
    ids = {r.redemption.id for r in results if isinstance(r, RedeemOutcome)}
    assert len(ids) == 1
    assert sum(1 for r in results if isinstance(r, RedeemOutcome) and not r.replayed) == 1
    assert await balance(runtime, member) == 900
    assert await stock_of(runtime, "mug") == 49
