"""Grant, spend, deduct and transfer, and what the read side shows afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import text

from ledger import service
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, create_members, run


async def test_grant_creates_balance_lot_and_postings(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    posted = await run(
        runtime,
        lambda s: service.grant(
            s, member, 100, idempotency_key="g1", memo="welcome", lifetime_days=30
        ),
    )
    assert not posted.replayed
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).available == 100
        lots = await service.expiring_lots(session, member, within_days=31)
        assert [lot.amount for lot in lots] == [100]
        assert await service.expiring_lots(session, member, within_days=29) == []
        tx = await service.get_transaction(session, posted.transaction_id)
    assert tx is not None and tx.kind == "grant" and tx.memo == "welcome"
    assert sorted(p.amount for p in tx.postings) == [-100, 100]
    assert await account_balance(runtime, "system:issuance:points") == -100


async def test_xp_never_expires_and_cannot_be_spent(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(
        runtime,
        lambda s: service.grant(
            s, member, 50, idempotency_key="x1", currency="xp", lifetime_days=30
        ),
    )
    async with runtime.transaction() as session:
        expires = await session.execute(text("SELECT expires_at FROM lots"))
        assert expires.scalar_one() is None
        assert (await service.balances(session, member, "xp")).available == 50
        assert (await service.balances(session, member, "points")).available == 0


async def test_spend_consumes_soonest_expiring_lots_first(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    soon = datetime.now(UTC) + timedelta(days=3)
    later = datetime.now(UTC) + timedelta(days=9)
    await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="never"))
    await run(
        runtime, lambda s: service.grant(s, member, 10, idempotency_key="later", expires_at=later)
    )
    await run(
        runtime, lambda s: service.grant(s, member, 10, idempotency_key="soon", expires_at=soon)
    )
    await run(runtime, lambda s: service.spend(s, member, 15, idempotency_key="s1"))
    async with runtime.transaction() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT t.idempotency_key, l.remaining FROM lots l"
                    " JOIN transactions t ON t.id = l.transaction_id ORDER BY l.id"
                )
            )
        ).all()
        allocations = (
            await session.execute(text("SELECT sum(amount) FROM lot_allocations"))
        ).scalar_one()
    assert dict(rows) == {"never": 10, "later": 5, "soon": 0}
    assert allocations == 15
    assert await account_balance(runtime, "system:redemptions:points") == 15


async def test_deduct_goes_to_adjustments_and_works_for_xp(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 40, idempotency_key="x", currency="xp"))
    await run(
        runtime,
        lambda s: service.deduct(
            s, member, 15, idempotency_key="d", currency="xp", memo="correction"
        ),
    )
    assert await account_balance(runtime, "system:adjustments:xp") == 15
    async with runtime.transaction() as session:
        assert (await service.balances(session, member, "xp")).available == 25


async def test_transfer_carries_expiry_to_the_receiver(runtime: Runtime) -> None:
    alice, bob = await create_members(runtime, 2)
    soon = datetime.now(UTC) + timedelta(days=2)
    await run(runtime, lambda s: service.grant(s, alice, 30, idempotency_key="a1", expires_at=soon))
    await run(runtime, lambda s: service.grant(s, alice, 30, idempotency_key="a2"))
    await run(runtime, lambda s: service.transfer(s, alice, bob, 40, idempotency_key="t"))
    async with runtime.transaction() as session:
        assert (await service.balances(session, alice)).available == 20
        assert (await service.balances(session, bob)).available == 40
        bob_lots = (
            await session.execute(
                text(
                    "SELECT l.remaining, l.expires_at FROM lots l JOIN accounts a"
                    " ON a.id = l.account_id WHERE a.member_id = :m ORDER BY l.remaining"
                ),
                {"m": bob},
            )
        ).all()
    assert [(r[0], r[1] is None) for r in bob_lots] == [(10, True), (30, False)]
    assert abs((bob_lots[1][1] - soon).total_seconds()) < 1


async def test_history_is_newest_first_with_keyset_cursor(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    for n in range(5):
        await run(
            runtime,
            partial(
                service.grant, member_id=member, amount=n + 1, idempotency_key=f"h{n}", memo=f"#{n}"
            ),
        )
    await run(runtime, lambda s: service.spend(s, member, 3, idempotency_key="sp"))
    async with runtime.transaction() as session:
        first = await service.history(session, member, first=4)
        second = await service.history(session, member, first=4, after=first.entries[-1].cursor)
    assert [e.amount for e in first.entries] == [-3, 5, 4, 3]
    assert first.has_next_page
    assert [e.amount for e in second.entries] == [2, 1]
    assert not second.has_next_page
    assert first.entries[0].kind == "spend" and first.entries[1].memo == "#4"


async def test_summary_conserves_value(runtime: Runtime) -> None:
    alice, bob = await create_members(runtime, 2)
    await run(runtime, lambda s: service.grant(s, alice, 100, idempotency_key="g"))
    await run(runtime, lambda s: service.spend(s, alice, 30, idempotency_key="s"))
    await run(runtime, lambda s: service.transfer(s, alice, bob, 20, idempotency_key="t"))
    await run(
        runtime, lambda s: service.credit_pending(s, bob, 7, idempotency_key="p", pending_days=14)
    )
    async with runtime.transaction() as session:
        summary = await service.ledger_summary(session)
    assert (summary.issued, summary.spent, summary.expired) == (107, 30, 0)
    assert (summary.outstanding, summary.pending) == (77, 7)
    assert summary.issued == summary.outstanding + summary.spent + summary.expired


async def test_idempotent_replay_returns_the_first_result(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    first = await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="k"))
    again = await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="k"))
    assert again.replayed and again.transaction_id == first.transaction_id
    spent = await run(runtime, lambda s: service.spend(s, member, 10, idempotency_key="sk"))
    # the balance is now 0, yet the replay of the spend still answers with the stored result
    replay = await run(runtime, lambda s: service.spend(s, member, 10, idempotency_key="sk"))
    assert replay.replayed and replay.transaction_id == spent.transaction_id
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).available == 0


async def test_a_ledger_call_first_in_a_transaction_rolls_back_with_it(runtime: Runtime) -> None:
    """The raw driver call must run inside the caller's transaction even when it is the first
    statement (SQLAlchemy's adapter only sends BEGIN before its own first statement)."""
    (member,) = await create_members(runtime, 1)

    class Boom(Exception):
        pass

    try:
        async with runtime.transaction() as session:
            await service.grant(session, member, 10, idempotency_key="first-then-boom")
            raise Boom
    except Boom:
        pass
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).available == 0
        found = await session.execute(
            text("SELECT count(*) FROM transactions WHERE idempotency_key = 'first-then-boom'")
        )
        assert found.scalar_one() == 0
