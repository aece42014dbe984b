"""``redeem`` through the service: the happy path, idempotency, and every refusal writing
nothing at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from members.service import set_status
from redemptions import catalog, service
from redemptions.service import RedeemOutcome
from server.errors import DomainError
from server.runtime import Runtime
from tests.members.helpers import earn_xp, make_ladder
from tests.redemptions.helpers import (
    balance,
    create_members,
    external_id,
    in_transaction,
    make_item,
    redeem,
    snapshot,
    stock_of,
)

pytestmark = pytest.mark.usefixtures("redeem_path")


async def test_redeem_spends_decrements_stock_and_records(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=1000)
    who = await external_id(runtime, member)
    await make_item(runtime, "mug", cost=150, stock=5)
    outcome = await redeem(runtime, who, "mug", "k1", quantity=2)
    assert isinstance(outcome, RedeemOutcome), outcome
    assert not outcome.replayed
    row = outcome.redemption
    assert (row.quantity, row.cost, row.status, row.code) == (2, 300, "PENDING", None)
    assert await balance(runtime, member) == 700
    assert await stock_of(runtime, "mug") == 3
    async with runtime.transaction() as session:
        spend = (
            await session.execute(
                text("SELECT kind, idempotency_key, memo FROM transactions WHERE id = :id"),
                {"id": row.spend_transaction_id},
            )
        ).one()
        active = await session.scalar(
            text("SELECT last_active_at FROM members WHERE id = :id"), {"id": member}
        )
    assert spend == ("spend", f"redeem:{member}:k1", "Mug")
    assert active is not None


async def test_replay_returns_the_same_redemption_and_moves_nothing(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=1000)
    who = await external_id(runtime, member)
    await make_item(runtime, "mug", cost=100, stock=5)
    await make_item(runtime, "cap", cost=10)
    first = await redeem(runtime, who, "mug", "same")
    assert isinstance(first, RedeemOutcome)
    before = await snapshot(runtime)
    again = await redeem(runtime, who, "mug", "same")
    assert isinstance(again, RedeemOutcome)
    assert again.replayed
    assert again.redemption.id == first.redemption.id
    assert await snapshot(runtime) == before

    conflict = await redeem(runtime, who, "mug", "same", quantity=2)
    assert isinstance(conflict, DomainError)
    assert (conflict.code, conflict.field) == ("IDEMPOTENCY_CONFLICT", "idempotencyKey")
    conflict = await redeem(runtime, who, "cap", "same")
    assert isinstance(conflict, DomainError) and conflict.code == "IDEMPOTENCY_CONFLICT"
    assert await snapshot(runtime) == before


async def test_keys_are_scoped_to_the_member(runtime: Runtime) -> None:
    alice, bob = await create_members(runtime, 2, points=500)
    await make_item(runtime, "mug", cost=100)
    for member in (alice, bob):
        outcome = await redeem(runtime, await external_id(runtime, member), "mug", "order-1")
        assert isinstance(outcome, RedeemOutcome) and not outcome.replayed
    assert await balance(runtime, alice) == await balance(runtime, bob) == 400


async def test_a_long_key_is_hashed_for_the_ledger(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=500)
    who = await external_id(runtime, member)
    await make_item(runtime, "mug", cost=100)
    key = "k" * 255
    first = await redeem(runtime, who, "mug", key)
    again = await redeem(runtime, who, "mug", key)
    assert isinstance(first, RedeemOutcome) and isinstance(again, RedeemOutcome)
    assert again.replayed and again.redemption.id == first.redemption.id
    short = await redeem(runtime, who, "mug", "short-key")
    assert isinstance(short, RedeemOutcome)
    # the statement names the spend as service.spend_key does, in both forms
    async with runtime.transaction() as session:
        for outcome, used in ((first, key), (short, "short-key")):
            stored = await session.scalar(
                text("SELECT idempotency_key FROM transactions WHERE id = :id"),
                {"id": outcome.redemption.spend_transaction_id},
            )
            assert stored == service.spend_key(member, used)
            assert len(stored) <= 255
    assert stored.startswith("redeem:") and service.spend_key(member, key).startswith("redeem#")
    assert await balance(runtime, member) == 300


async def assert_refused(runtime: Runtime, code: str, *args: object, **kwargs: object) -> None:
    before = await snapshot(runtime)
    outcome = await redeem(runtime, *args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(outcome, DomainError), outcome
    assert outcome.code == code, outcome
    assert await snapshot(runtime) == before


async def test_each_refusal_has_its_code_and_writes_nothing(runtime: Runtime) -> None:
    await make_ladder(runtime)  # member (0 xp), silver (500), gold (2000)
    rich, poor, suspended = await create_members(runtime, 3, points=0)
    from ledger import service as ledger

    async with runtime.transaction() as session:
        await ledger.grant(session, rich, 10_000, idempotency_key="rich")
        await ledger.grant(session, poor, 50, idempotency_key="poor")
        await ledger.grant(session, suspended, 10_000, idempotency_key="suspended")
    rich_id, poor_id = await external_id(runtime, rich), await external_id(runtime, poor)
    suspended_id = await external_id(runtime, suspended)
    async with runtime.transaction() as session:
        await set_status(session, suspended_id, "suspended")
    now = datetime.now(UTC)
    await make_item(runtime, "mug", cost=100, stock=2)
    await make_item(runtime, "gone", cost=100, stock=0)
    await make_item(runtime, "limited", cost=100, per_member_limit=2)
    await make_item(runtime, "gold-only", cost=100, min_tier="gold")
    await make_item(runtime, "later", cost=100, available_from=now + timedelta(days=1))
    await make_item(runtime, "over", cost=100, available_until=now - timedelta(seconds=1))
    await make_item(runtime, "pricey", cost=600_000_000)
    await make_item(runtime, "coupon", kind="COUPON", cost=10, codes=("A",))
    limited = await redeem(runtime, rich_id, "limited", "l1", quantity=2)
    assert isinstance(limited, RedeemOutcome)

    await assert_refused(runtime, "NOT_FOUND", rich_id, "nothing-here", "k")
    await assert_refused(runtime, "NOT_FOUND", "nobody", "mug", "k")
    await assert_refused(runtime, "INVALID_INPUT", rich_id, "mug", "k", quantity=0)
    await assert_refused(runtime, "INVALID_INPUT", rich_id, "mug", "k", quantity=-3)
    await assert_refused(runtime, "INVALID_INPUT", rich_id, "pricey", "k", quantity=2)
    await assert_refused(runtime, "INVALID_INPUT", rich_id, "coupon", "k", quantity=2)
    await assert_refused(runtime, "INVALID_INPUT", rich_id, "mug", "")
    await assert_refused(runtime, "INVALID_INPUT", rich_id, "mug", "x" * 256)
    await assert_refused(runtime, "NOT_ELIGIBLE", suspended_id, "mug", "k")
    await assert_refused(runtime, "NOT_ELIGIBLE", rich_id, "gold-only", "k")
    await assert_refused(runtime, "NOT_ELIGIBLE", rich_id, "later", "k")
    await assert_refused(runtime, "NOT_ELIGIBLE", rich_id, "over", "k")
    await assert_refused(runtime, "LIMIT_REACHED", rich_id, "limited", "k")
    await assert_refused(runtime, "OUT_OF_STOCK", rich_id, "gone", "k")
    await assert_refused(runtime, "OUT_OF_STOCK", rich_id, "mug", "k", quantity=3)
    await assert_refused(runtime, "INSUFFICIENT_FUNDS", poor_id, "mug", "k")

    # and the refused keys stay usable: a failure stored nothing under them
    await earn_xp(runtime, rich, 2000, "xp", now)
    outcome = await redeem(runtime, rich_id, "gold-only", "k")
    assert isinstance(outcome, RedeemOutcome) and not outcome.replayed


async def test_coupon_redemption_gets_a_code_and_out_of_codes_is_out_of_stock(
    runtime: Runtime,
) -> None:
    alice, bob = await create_members(runtime, 2, points=100)
    await make_item(runtime, "coffee", kind="COUPON", cost=10, codes=("ONLY-ONE",))
    first = await redeem(runtime, await external_id(runtime, alice), "coffee", "k")
    assert isinstance(first, RedeemOutcome)
    assert first.redemption.code == "ONLY-ONE"
    before = await snapshot(runtime)
    second = await redeem(runtime, await external_id(runtime, bob), "coffee", "k")
    assert isinstance(second, DomainError) and second.code == "OUT_OF_STOCK"
    assert await snapshot(runtime) == before


async def test_upsert_validates_and_adds_codes_once(runtime: Runtime) -> None:
    from redemptions.catalog import CatalogItemInput

    async def upsert(**fields: object) -> catalog.UpsertOutcome | DomainError:
        data = CatalogItemInput(**{"key": "c", "name": "C", "cost": 5, **fields})  # type: ignore[arg-type]
        return await in_transaction(runtime, lambda s: catalog.upsert_item(s, data))

    outcome = await upsert(kind="COUPON", codes=("A", "B", "A", " B "))
    assert not isinstance(outcome, DomainError)
    assert not isinstance(outcome, DomainError) and outcome.codes_added == 2
    outcome = await upsert(kind="COUPON", codes=("B", "C"))
    assert not isinstance(outcome, DomainError) and outcome.codes_added == 1
    for fields, code in (
        ({"cost": 0}, "INVALID_INPUT"),
        ({"cost": 1_000_000_001}, "INVALID_INPUT"),
        ({"stock": -1, "set_stock": True}, "INVALID_INPUT"),
        ({"per_member_limit": 0}, "INVALID_INPUT"),
        ({"kind": "GIFT"}, "INVALID_INPUT"),
        ({"kind": "REWARD", "codes": ("A",)}, "INVALID_INPUT"),
        ({"min_tier": "platinum"}, "NOT_FOUND"),
        (
            {
                "available_from": datetime(2030, 1, 2, tzinfo=UTC),
                "available_until": datetime(2030, 1, 1, tzinfo=UTC),
            },
            "INVALID_INPUT",
        ),
    ):
        refused = await upsert(**{"kind": "COUPON", **fields})
        assert isinstance(refused, DomainError) and refused.code == code, (fields, refused)


@pytest.mark.parametrize("set_stock", [False, True])
async def test_upsert_keeps_stock_unless_given(runtime: Runtime, set_stock: bool) -> None:
    await make_item(runtime, "mug", stock=7)
    from redemptions.catalog import CatalogItemInput

    data = CatalogItemInput(key="mug", name="Big mug", cost=100, stock=3, set_stock=set_stock)
    await in_transaction(runtime, lambda s: catalog.upsert_item(s, data))
    assert await stock_of(runtime, "mug") == (3 if set_stock else 7)


async def test_kind_of_a_redeemed_item_cannot_change(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=500)
    await make_item(runtime, "mug", cost=100)
    assert isinstance(
        await redeem(runtime, await external_id(runtime, member), "mug", "k"), RedeemOutcome
    )
    from redemptions.catalog import CatalogItemInput

    data = CatalogItemInput(key="mug", name="Mug", cost=100, kind="LOTTERY")
    refused = await in_transaction(runtime, lambda s: catalog.upsert_item(s, data))
    assert isinstance(refused, DomainError) and refused.code == "CONFLICT"
