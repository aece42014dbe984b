"""Concurrency over separate connections: every task opens its own connection and
transaction, waits at a barrier, then all fire at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from ledger import service
from ledger.errors import LedgerError
from ledger.tasks import run_settle_expirations
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, advance_clock, create_members, run

TIMEOUT = 60


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def all_at_once(
    engine: AsyncEngine, ops: Sequence[Callable[[AsyncSession], Awaitable[Any]]]
) -> list[Any]:
    """Run each op in its own connection and transaction, released together; returns each
    op's result or the LedgerError it raised."""
    gate = asyncio.Event()
    ready = 0

    async def one(op: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        nonlocal ready
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(text("SELECT 1"))  # connection open, transaction begun
            ready += 1
            if ready == len(ops):
                gate.set()
            await gate.wait()
            try:
                return await op(session)
            except LedgerError as error:
                return error

    return await asyncio.wait_for(asyncio.gather(*(one(op) for op in ops)), TIMEOUT)


async def test_fifty_spends_of_ten_against_a_hundred(runtime: Runtime, engine: AsyncEngine) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 100, idempotency_key="g"))
    ops = [
        partial(service.spend, member_id=member, amount=10, idempotency_key=f"spend-{n}")
        for n in range(50)
    ]
    results = await all_at_once(engine, ops)
    failures = [r for r in results if isinstance(r, LedgerError)]
    assert len(results) - len(failures) == 10
    assert {f.code for f in failures} == {"INSUFFICIENT_FUNDS"}
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).available == 0
        lowest = await session.execute(text("SELECT min(balance) FROM accounts"))
        assert lowest.scalar_one() >= 0


@pytest.mark.parametrize("operation", ["grant", "spend", "transfer"])
async def test_one_key_twenty_requests_move_value_once(
    runtime: Runtime, engine: AsyncEngine, operation: str
) -> None:
    alice, bob = await create_members(runtime, 2)
    await run(runtime, lambda s: service.grant(s, alice, 100, idempotency_key="seed"))

    async def op(session: AsyncSession) -> Any:
        if operation == "grant":
            return await service.grant(session, alice, 7, idempotency_key="same")
        if operation == "spend":
            return await service.spend(session, alice, 7, idempotency_key="same")
        return await service.transfer(session, alice, bob, 7, idempotency_key="same")

    results = await all_at_once(engine, [op] * 20)
    assert not [r for r in results if isinstance(r, LedgerError)]
    assert len({r.transaction_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    expected = {"grant": 107, "spend": 93, "transfer": 93}[operation]
    async with runtime.transaction() as session:
        assert (await service.balances(session, alice)).available == expected
        count = await session.execute(text("SELECT count(*) FROM transactions"))
        assert count.scalar_one() == 2


async def test_one_key_with_other_input_concurrently_conflicts(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    members = await create_members(runtime, 10)
    ops = [
        partial(service.grant, member_id=m, amount=5, idempotency_key="contested") for m in members
    ]
    results = await all_at_once(engine, ops)
    winners = [r for r in results if not isinstance(r, LedgerError)]
    assert len(winners) == 1
    assert {r.code for r in results if isinstance(r, LedgerError)} == {"IDEMPOTENCY_CONFLICT"}
    assert await account_balance(runtime, "system:issuance:points") == -5


async def test_two_settlements_at_once_expire_each_lot_once(runtime: Runtime) -> None:
    members = await create_members(runtime, 40)
    for m in members:
        for n in range(5):
            await run(
                runtime,
                partial(
                    service.grant,
                    member_id=m,
                    amount=3,
                    idempotency_key=f"{m}:{n}",
                    lifetime_days=1,
                ),
            )
    await advance_clock(runtime, 2)
    first, second = await asyncio.wait_for(
        asyncio.gather(
            run_settle_expirations(runtime, batch_size=37),
            run_settle_expirations(runtime, batch_size=53),
        ),
        TIMEOUT,
    )
    assert first.count + second.count == 200
    assert first.amount + second.amount == 600
    assert await account_balance(runtime, "system:expired:points") == 600


async def test_settlement_racing_spends_never_double_counts(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    members = await create_members(runtime, 10)
    for m in members:
        await run(
            runtime,
            partial(
                service.grant, member_id=m, amount=10, idempotency_key=f"a{m}", lifetime_days=1
            ),
        )
        await run(
            runtime,
            partial(
                service.grant, member_id=m, amount=10, idempotency_key=f"b{m}", lifetime_days=60
            ),
        )
    await advance_clock(runtime, 2)  # the first lot of each member is due, the second is not
    ops: list[Callable[[AsyncSession], Awaitable[Any]]] = [
        partial(service.spend, member_id=m, amount=10, idempotency_key=f"s{m}") for m in members
    ]
    ops += [lambda s: service.settle_expirations(s, batch_size=3)] * 2
    results = await all_at_once(engine, ops)
    assert not [r for r in results if isinstance(r, LedgerError)]
    assert await account_balance(runtime, "system:expired:points") == 100
    assert await account_balance(runtime, "system:redemptions:points") == 100


async def test_opposite_transfers_do_not_deadlock(runtime: Runtime, engine: AsyncEngine) -> None:
    members = await create_members(runtime, 4)
    for m in members:
        await run(
            runtime, partial(service.grant, member_id=m, amount=1000, idempotency_key=f"g{m}")
        )
    rng = random.Random(7)
    pairs = [rng.sample(members, 2) for _ in range(40)]
    ops = [
        partial(
            service.transfer, from_member_id=a, to_member_id=b, amount=3, idempotency_key=f"t{n}"
        )
        for n, (a, b) in enumerate(pairs)
    ]
    results = await all_at_once(engine, ops)
    assert not [r for r in results if isinstance(r, BaseException)]
    async with runtime.transaction() as session:
        held = await service.balances_for_members(session, members)
    assert sum(b.available for b in held.values()) == 4000
    for m in members:
        sent = sum(3 for a, _ in pairs if a == m)
        received = sum(3 for _, b in pairs if b == m)
        assert held[m].available == 1000 - sent + received
