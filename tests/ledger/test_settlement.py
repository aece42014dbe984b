"""Expiry settlement: set-based, batched, each lot expired once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import text

from ledger import service
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, advance_clock, create_members, run


async def test_settlement_expires_remainders_in_batches(runtime: Runtime) -> None:
    members = await create_members(runtime, 3)
    for m in members:
        for n in range(4):
            await run(
                runtime,
                partial(
                    service.grant,
                    member_id=m,
                    amount=10,
                    idempotency_key=f"{m}-{n}",
                    lifetime_days=5 if n < 3 else 50,
                ),
            )
    await run(runtime, lambda s: service.spend(s, members[0], 15, idempotency_key="s"))
    await advance_clock(runtime, 6)
    async with runtime.transaction() as session:
        # points past expires_at are not available even before settlement
        assert (await service.balances(session, members[1])).available == 10
        settled = await service.settle_expirations(session, batch_size=4)
    assert (settled.count, settled.amount) == (9 - 1, 90 - 15)  # one lot was fully spent
    assert settled.batches == 3
    assert await account_balance(runtime, "system:expired:points") == 75
    async with runtime.transaction() as session:
        keys = (
            await session.execute(
                text(
                    "SELECT count(DISTINCT idempotency_key) FROM transactions WHERE kind = 'expire'"
                    " AND idempotency_key LIKE 'expire:lot:%'"
                )
            )
        ).scalar_one()
        again = await service.settle_expirations(session)
        summary = await service.ledger_summary(session)
    assert keys == 8 and again.count == 0
    assert summary.expired == 75
    assert summary.issued == summary.outstanding + summary.spent + summary.expired


async def test_settlement_never_runs_ahead_of_the_clock(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="g", lifetime_days=1))
    async with runtime.transaction() as session:
        future = datetime.now(UTC) + timedelta(days=5)
        assert (await service.settle_expirations(session, future)).count == 0
        assert (await service.balances(session, member)).available == 10


async def test_settling_as_of_the_past_leaves_later_lots(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="a", lifetime_days=1))
    await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="b", lifetime_days=3))
    await advance_clock(runtime, 4)
    async with runtime.transaction() as session:
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        assert (await service.settle_expirations(session, two_days_ago)).amount == 10
        assert (await service.settle_expirations(session)).amount == 10
