"""Cancelling and fulfilling: the refund restores the exact lots (with their original
expiry), stock comes back, a coupon code goes back to the pool only if never shown."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from ledger import service as ledger
from redemptions import service
from redemptions.service import RedeemOutcome, RedemptionRow
from server.errors import DomainError
from server.runtime import Runtime
from tests.redemptions.helpers import (
    balance,
    create_members,
    external_id,
    gather_all,
    in_transaction,
    make_item,
    redeem,
    snapshot,
    stock_of,
)


async def lots_of(runtime: Runtime, member_id: int) -> list[tuple[int, int, datetime | None]]:
    async with runtime.transaction() as session:
        rows = await session.execute(
            text(
                "SELECT l.amount, l.remaining, l.expires_at FROM lots l"
                " JOIN accounts a ON a.id = l.account_id"
                " WHERE a.member_id = :m AND a.currency = 'points' ORDER BY l.id"
            ),
            {"m": member_id},
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def cancel(
    runtime: Runtime, redemption_id: int, *, by_member: bool = False, reason: str | None = None
) -> RedemptionRow | DomainError:
    return await in_transaction(
        runtime,
        lambda s: service.cancel(s, redemption_id, reason=reason, by_member=by_member),
    )


async def fulfill(runtime: Runtime, redemption_id: int) -> RedemptionRow | DomainError:
    return await in_transaction(runtime, lambda s: service.fulfill(s, redemption_id))


async def test_cancel_restores_balance_lots_with_their_expiry_and_stock(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    soon = datetime.now(UTC) + timedelta(days=10)
    later = datetime.now(UTC) + timedelta(days=200)
    async with runtime.transaction() as session:
        await ledger.grant(session, member, 300, idempotency_key="later", expires_at=later)
        await ledger.grant(session, member, 100, idempotency_key="soon", expires_at=soon)
        await ledger.grant(session, member, 50, idempotency_key="never")
    before_lots = await lots_of(runtime, member)
    await make_item(runtime, "mug", cost=150, stock=4)
    outcome = await redeem(runtime, await external_id(runtime, member), "mug", "k", quantity=2)
    assert isinstance(outcome, RedeemOutcome)
    # soonest-expiring first: all of "soon" (100), then 200 of "later"
    assert [lot[1] for lot in await lots_of(runtime, member)] == [100, 0, 50]
    assert await stock_of(runtime, "mug") == 2

    cancelled = await cancel(runtime, outcome.redemption.id, reason="changed my mind")
    assert isinstance(cancelled, RedemptionRow)
    assert (cancelled.status, cancelled.cancel_reason) == ("CANCELLED", "changed my mind")
    assert cancelled.refund_transaction_id is not None
    assert await lots_of(runtime, member) == before_lots  # same lots, same expiry
    assert await balance(runtime, member) == 450
    assert await stock_of(runtime, "mug") == 4

    again = await cancel(runtime, outcome.redemption.id)
    assert isinstance(again, DomainError) and again.code == "ALREADY_DONE"
    # the cancelled units no longer count against the limit, and the key still replays
    replay = await redeem(runtime, await external_id(runtime, member), "mug", "k", quantity=2)
    assert isinstance(replay, RedeemOutcome) and replay.replayed
    assert replay.redemption.status == "CANCELLED"


async def test_fulfilled_cannot_be_cancelled_and_cancelled_cannot_be_fulfilled(
    runtime: Runtime,
) -> None:
    (member,) = await create_members(runtime, 1, points=1000)
    who = await external_id(runtime, member)
    await make_item(runtime, "mug", cost=100)
    first = await redeem(runtime, who, "mug", "a")
    second = await redeem(runtime, who, "mug", "b")
    assert isinstance(first, RedeemOutcome) and isinstance(second, RedeemOutcome)

    done = await fulfill(runtime, first.redemption.id)
    assert isinstance(done, RedemptionRow) and done.status == "FULFILLED"
    assert done.fulfilled_at is not None
    before = await snapshot(runtime)
    for outcome, code in (
        (await fulfill(runtime, first.redemption.id), "ALREADY_DONE"),
        (await cancel(runtime, first.redemption.id), "NOT_ELIGIBLE"),
        (await cancel(runtime, 999_999), "NOT_FOUND"),
        (await fulfill(runtime, 999_999), "NOT_FOUND"),
    ):
        assert isinstance(outcome, DomainError) and outcome.code == code, outcome
    assert await snapshot(runtime) == before

    assert isinstance(await cancel(runtime, second.redemption.id), RedemptionRow)
    refused = await fulfill(runtime, second.redemption.id)
    assert isinstance(refused, DomainError) and refused.code == "NOT_ELIGIBLE"
    assert await balance(runtime, member) == 900


async def test_cancel_after_points_expired_keeps_them_expired(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    soon = datetime.now(UTC) + timedelta(days=1)
    async with runtime.transaction() as session:
        await ledger.grant(session, member, 100, idempotency_key="soon", expires_at=soon)
    await make_item(runtime, "mug", cost=100)
    outcome = await redeem(runtime, await external_id(runtime, member), "mug", "k")
    assert isinstance(outcome, RedeemOutcome)
    async with runtime.transaction() as session:  # the lot's expiry passes
        await session.execute(text("UPDATE lots SET expires_at = now() - interval '1 hour'"))
    assert isinstance(await cancel(runtime, outcome.redemption.id), RedemptionRow)
    assert await balance(runtime, member) == 0  # restored as expired, never spendable again


async def test_unseen_code_returns_to_the_pool_and_a_shown_one_never_does(
    runtime: Runtime,
) -> None:
    alice, bob, carol = await create_members(runtime, 3, points=100)
    await make_item(runtime, "coffee", kind="COUPON", cost=10, codes=("C1", "C2"))
    unseen = await redeem(runtime, await external_id(runtime, alice), "coffee", "k")
    shown = await redeem(runtime, await external_id(runtime, bob), "coffee", "k")
    assert isinstance(unseen, RedeemOutcome) and isinstance(shown, RedeemOutcome)
    async with runtime.transaction() as session:
        codes = await service.reveal_codes(session, bob, [shown.redemption.id], datetime.now(UTC))
        nothing = await service.reveal_codes(  # not alice's redemption: nothing, no mark
            session, bob, [unseen.redemption.id], datetime.now(UTC)
        )
    assert codes == {shown.redemption.id: shown.redemption.code}
    assert nothing == {}

    assert isinstance(await cancel(runtime, unseen.redemption.id), RedemptionRow)
    assert isinstance(await cancel(runtime, shown.redemption.id), RedemptionRow)
    async with runtime.transaction() as session:
        retired = await service.get_redemption(session, shown.redemption.id)
        returned = await service.get_redemption(session, unseen.redemption.id)
        # the member who saw it may still read it; the returned one is gone from alice's view
        again = await service.reveal_codes(
            session, alice, [unseen.redemption.id], datetime.now(UTC)
        )
    assert retired is not None and retired.code == shown.redemption.code
    assert returned is not None and returned.code is None
    assert again == {}

    # the pool now holds only the unseen code: carol gets it, nobody else can
    later = await redeem(runtime, await external_id(runtime, carol), "coffee", "k")
    assert isinstance(later, RedeemOutcome)
    assert later.redemption.code == unseen.redemption.code
    dry = await redeem(runtime, await external_id(runtime, alice), "coffee", "k2")
    assert isinstance(dry, DomainError) and dry.code == "OUT_OF_STOCK"


async def test_reveal_racing_cancel_never_shows_a_returned_code(runtime: Runtime) -> None:
    members = await create_members(runtime, 20, points=100)
    codes = tuple(f"R{n}" for n in range(20))
    await make_item(runtime, "coffee", kind="COUPON", cost=10, codes=codes)
    redemptions: list[tuple[int, RedemptionRow]] = []
    for member in members:
        outcome = await redeem(runtime, await external_id(runtime, member), "coffee", "k")
        assert isinstance(outcome, RedeemOutcome)
        redemptions.append((member, outcome.redemption))

    async def reveal(member: int, redemption_id: int) -> dict[int, str]:
        async with runtime.transaction() as session:
            return await service.reveal_codes(session, member, [redemption_id], datetime.now(UTC))

    results = await gather_all(
        [reveal(m, r.id) for m, r in redemptions] + [cancel(runtime, r.id) for _, r in redemptions]
    )
    shown = {
        rid: code
        for result in results[:20]
        if isinstance(result, dict)
        for rid, code in result.items()
    }
    async with runtime.transaction() as session:
        pool = {
            row[0]
            for row in await session.execute(
                text("SELECT code FROM coupon_codes WHERE redemption_id IS NULL")
            )
        }
        revealed = await session.scalar(
            text("SELECT count(*) FROM redemptions WHERE code_revealed_at IS NOT NULL")
        )
    assert revealed == len(shown)
    assert not pool & set(shown.values())  # nothing shown went back to the pool
    assert len(pool) + len(shown) == 20  # and everything not shown did


async def test_concurrent_cancels_refund_once(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=100)
    await make_item(runtime, "mug", cost=100, stock=1)
    outcome = await redeem(runtime, await external_id(runtime, member), "mug", "k")
    assert isinstance(outcome, RedeemOutcome)
    results = await gather_all([cancel(runtime, outcome.redemption.id) for _ in range(10)])
    kinds = Counter("ok" if isinstance(r, RedemptionRow) else r.code for r in results)
    assert kinds == {"ok": 1, "ALREADY_DONE": 9}
    assert await balance(runtime, member) == 100
    assert await stock_of(runtime, "mug") == 1


async def test_cancel_racing_fulfill_one_wins(runtime: Runtime) -> None:
    members = await create_members(runtime, 10, points=100)
    await make_item(runtime, "mug", cost=100, stock=10)
    ids = []
    for member in members:
        outcome = await redeem(runtime, await external_id(runtime, member), "mug", "k")
        assert isinstance(outcome, RedeemOutcome)
        ids.append(outcome.redemption.id)
    results = await gather_all(
        [cancel(runtime, i) for i in ids] + [fulfill(runtime, i) for i in ids]
    )
    for cancelled, fulfilled in zip(results[:10], results[10:], strict=True):
        assert isinstance(cancelled, RedemptionRow) != isinstance(fulfilled, RedemptionRow)
    refunded = sum(isinstance(r, RedemptionRow) for r in results[:10])
    assert await stock_of(runtime, "mug") == refunded
    assert sum([await balance(runtime, m) for m in members]) == 100 * refunded
