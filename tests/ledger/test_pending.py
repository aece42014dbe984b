"""Pending credits: a return window, then vest or void, each exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from ledger import service
from ledger.errors import LedgerError
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, advance_clock, create_members, run


async def test_pending_then_vest_by_the_worker(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(
        runtime,
        lambda s: service.credit_pending(
            s, member, 80, idempotency_key="order-1", pending_days=14, lifetime_days=365
        ),
    )
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).pending == 80
        assert (await service.vest_pending(session)).count == 0  # not due yet
    await advance_clock(runtime, 15)
    async with runtime.transaction() as session:
        vested = await service.vest_pending(session)
        assert (vested.count, vested.amount) == (1, 80)
        balances = await service.balances(session, member)
        expiry = (await session.execute(text("SELECT expires_at FROM lots"))).scalar_one()
        assert (await service.vest_pending(session)).count == 0  # once
    assert (balances.available, balances.pending) == (80, 0)
    # the lot lives pointsLifetimeDays from the moment the points became available
    expected = datetime.now(UTC) - timedelta(days=1) + timedelta(days=365)
    assert abs((expiry - expected).total_seconds()) < 60


async def test_void_returns_points_to_issuance(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    pending = await run(
        runtime,
        lambda s: service.credit_pending(s, member, 30, idempotency_key="o", pending_days=7),
    )
    voided = await run(runtime, lambda s: service.void(s, pending.transaction_id))
    assert await account_balance(runtime, "system:issuance:points") == 0
    with pytest.raises(LedgerError) as caught:
        await run(runtime, lambda s: service.vest(s, pending.transaction_id))
    assert caught.value.code == "ALREADY_DONE"
    async with runtime.transaction() as session:
        view = await service.get_transaction(session, voided.transaction_id)
        status = (await session.execute(text("SELECT status FROM pending_credits"))).scalar_one()
    assert view is not None and view.kind == "void" and status == "voided"


async def test_vest_one_now(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    pending = await run(
        runtime,
        lambda s: service.credit_pending(
            s, member, 12, idempotency_key="o", pending_days=30, currency="xp"
        ),
    )
    await run(runtime, lambda s: service.vest(s, pending.transaction_id))
    with pytest.raises(LedgerError) as caught:
        await run(runtime, lambda s: service.void(s, pending.transaction_id))
    assert caught.value.code == "ALREADY_DONE"
    async with runtime.transaction() as session:
        assert (await service.balances(session, member, "xp")).available == 12


async def test_pending_needs_a_release_time(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    with pytest.raises(LedgerError) as caught:
        await run(runtime, lambda s: service.credit_pending(s, member, 5, idempotency_key="x"))
    assert caught.value.code == "INVALID_INPUT"
