"""Reversals: exact lots restored, the expired-lot rule, credits taken back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from ledger import service
from ledger.errors import LedgerError
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, advance_clock, create_members, run


async def _remaining(runtime: Runtime) -> dict[str, tuple[int, int]]:
    """Lot remaining and expired parts by the idempotency key of the credit."""
    async with runtime.transaction() as session:
        rows = await session.execute(
            text(
                "SELECT t.idempotency_key, l.remaining, l.expired FROM lots l"
                " JOIN transactions t ON t.id = l.transaction_id"
            )
        )
        return {r[0]: (r[1], r[2]) for r in rows}


async def test_reversing_a_spend_restores_exactly_its_lots(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 10, idempotency_key="a", expires_at=datetime.now(UTC) + timedelta(days=1)
        ),
    )
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 10, idempotency_key="b", expires_at=datetime.now(UTC) + timedelta(days=5)
        ),
    )
    spent = await run(runtime, lambda s: service.spend(s, member, 15, idempotency_key="s"))
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 10, idempotency_key="c", expires_at=datetime.now(UTC) + timedelta(days=2)
        ),
    )
    reversal = await run(runtime, lambda s: service.reverse(s, spent.transaction_id, memo="refund"))
    assert await _remaining(runtime) == {"a": (10, 0), "b": (10, 0), "c": (10, 0)}
    assert await account_balance(runtime, "system:redemptions:points") == 0
    async with runtime.transaction() as session:
        view = await service.get_transaction(session, reversal.transaction_id)
        original = await service.get_transaction(session, spent.transaction_id)
    assert view is not None and view.kind == "reversal"
    assert view.reverses_id == spent.transaction_id and view.memo == "refund"
    assert original is not None and original.reversed_by_id == reversal.transaction_id


async def test_expired_part_of_a_reversed_spend_goes_straight_to_expired(
    runtime: Runtime,
) -> None:
    (member,) = await create_members(runtime, 1)
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 10, idempotency_key="short", expires_at=datetime.now(UTC) + timedelta(days=1)
        ),
    )
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 10, idempotency_key="long", expires_at=datetime.now(UTC) + timedelta(days=30)
        ),
    )
    spent = await run(runtime, lambda s: service.spend(s, member, 14, idempotency_key="s"))
    await advance_clock(runtime, 2)  # "short" has expired meanwhile (not even settled yet)
    reversal = await run(runtime, lambda s: service.reverse(s, spent.transaction_id, memo="r"))
    assert await _remaining(runtime) == {"short": (0, 10), "long": (10, 0)}
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).available == 10
        view = await service.get_transaction(session, reversal.transaction_id)
    assert view is not None
    assert view.metadata["redirected_to_expired"] == 10
    assert sorted(p.amount for p in view.postings) == [-14, 4, 10]
    assert await account_balance(runtime, "system:expired:points") == 10
    # settlement later finds nothing left to expire in "short"
    async with runtime.transaction() as session:
        settled = await service.settle_expirations(session)
    assert settled.count == 0


async def test_reversing_a_grant_takes_back_its_own_lot_first(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 50, idempotency_key="old", expires_at=datetime.now(UTC) + timedelta(days=1)
        ),
    )
    mistake = await run(runtime, lambda s: service.grant(s, member, 30, idempotency_key="oops"))
    await run(runtime, lambda s: service.spend(s, member, 60, idempotency_key="s"))
    # the spend took the soon-expiring "old" lot (50) and 10 of "oops"
    assert await _remaining(runtime) == {"old": (0, 0), "oops": (20, 0)}
    with pytest.raises(LedgerError) as caught:
        await run(runtime, lambda s: service.reverse(s, mistake.transaction_id, memo="x"))
    assert caught.value.code == "INSUFFICIENT_FUNDS"  # 20 left: never drive a balance negative
    await run(runtime, lambda s: service.grant(s, member, 15, idempotency_key="more"))
    await run(runtime, lambda s: service.reverse(s, mistake.transaction_id, memo="x"))
    assert await _remaining(runtime) == {"old": (0, 0), "oops": (0, 0), "more": (5, 0)}
    assert await account_balance(runtime, "system:issuance:points") == -(50 + 15)


async def test_reversing_an_expired_grant_reclaims_from_expired(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    granted = await run(
        runtime, lambda s: service.grant(s, member, 40, idempotency_key="g", lifetime_days=10)
    )
    await advance_clock(runtime, 11)
    async with runtime.transaction() as session:
        assert (await service.settle_expirations(session)).amount == 40
    await run(runtime, lambda s: service.reverse(s, granted.transaction_id, memo="mistake"))
    assert await _remaining(runtime) == {"g": (0, 0)}
    assert await account_balance(runtime, "system:expired:points") == 0
    assert await account_balance(runtime, "system:issuance:points") == 0


async def test_reversing_a_transfer_undoes_both_sides(runtime: Runtime) -> None:
    alice, bob = await create_members(runtime, 2)
    await run(runtime, lambda s: service.grant(s, alice, 25, idempotency_key="a"))
    sent = await run(runtime, lambda s: service.transfer(s, alice, bob, 20, idempotency_key="t"))
    await run(runtime, lambda s: service.reverse(s, sent.transaction_id, memo="fraud"))
    async with runtime.transaction() as session:
        assert (await service.balances(session, alice)).available == 25
        assert (await service.balances(session, bob)).available == 0


async def test_a_reversal_with_a_key_replays(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    granted = await run(runtime, lambda s: service.grant(s, member, 5, idempotency_key="g"))
    first = await run(
        runtime,
        lambda s: service.reverse(s, granted.transaction_id, memo="r", idempotency_key="rev-1"),
    )
    again = await run(
        runtime,
        lambda s: service.reverse(s, granted.transaction_id, memo="r", idempotency_key="rev-1"),
    )
    assert again.replayed and again.transaction_id == first.transaction_id


@pytest.mark.parametrize("kind", ["pending_credit", "vest", "void", "expire"])
async def test_settlement_transactions_cannot_be_reversed(runtime: Runtime, kind: str) -> None:
    (member,) = await create_members(runtime, 1)
    pending = await run(
        runtime, lambda s: service.credit_pending(s, member, 5, idempotency_key="p", pending_days=1)
    )
    await run(runtime, lambda s: service.grant(s, member, 5, idempotency_key="g", lifetime_days=1))
    target = pending.transaction_id
    if kind in ("vest", "void"):
        op = service.vest if kind == "vest" else service.void
        target = (await run(runtime, lambda s: op(s, pending.transaction_id))).transaction_id
    if kind == "expire":
        await advance_clock(runtime, 2)
        await run(runtime, service.settle_expirations)
        async with runtime.transaction() as session:
            target = (
                await session.execute(text("SELECT id FROM transactions WHERE kind = 'expire'"))
            ).scalar_one()
    with pytest.raises(LedgerError) as caught:
        await run(runtime, lambda s: service.reverse(s, target, memo="no"))
    assert caught.value.code == "CONFLICT"
