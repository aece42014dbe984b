"""Lotteries: tickets bought with points, one auditable draw, history kept for everyone."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import text

from redemptions import draws, lottery, service
from redemptions.draws import DrawRecord
from redemptions.service import RedeemOutcome, RedemptionRow
from server.errors import DomainError
from server.runtime import Runtime
from tests.redemptions.helpers import (
    balance,
    create_members,
    external_ids,
    gather_all,
    in_transaction,
    make_item,
    redeem,
    snapshot,
)


async def draw(runtime: Runtime, key: str, winners: int) -> DrawRecord | DomainError:
    return await in_transaction(runtime, lambda s: draws.draw_lottery(s, key, winners))


async def entries(runtime: Runtime, key: str) -> list[tuple[int, int, str]]:
    async with runtime.transaction() as session:
        rows = await session.execute(
            text(
                "SELECT e.id, e.member_id, e.status FROM lottery_entries e"
                " JOIN catalog_items i ON i.id = e.item_id WHERE i.key = :k ORDER BY e.id"
            ),
            {"k": key},
        )
        return [(row[0], row[1], row[2]) for row in rows]


def test_pick_winners_one_prize_per_member_and_deterministic() -> None:
    tickets = [(1, 10), (2, 10), (3, 10), (4, 20), (5, 30)]
    seed = "ab" * 32
    first = lottery.pick_winners(seed, tickets, 3)
    assert first == lottery.pick_winners(seed, list(reversed(tickets)), 3)
    assert len(first) == 3
    assert len({dict(tickets)[t] for t in first}) == 3  # three different members
    assert lottery.pick_winners(seed, tickets, 10) == first  # only three members exist
    ranked = sorted(tickets, key=lambda t: lottery.entry_score(seed, t[0]))
    assert first[0] == ranked[0][0]  # the best ticket always wins
    assert lottery.entries_digest([3, 1, 2]) == lottery.entries_digest([1, 2, 3])


async def test_draw_is_recorded_and_re_derivable(runtime: Runtime) -> None:
    members = await create_members(runtime, 12, points=1000)
    names = await external_ids(runtime, members)
    await make_item(runtime, "trip", kind="LOTTERY", cost=50)
    for n, member in enumerate(members):
        outcome = await redeem(runtime, names[member], "trip", "t", quantity=1 + n % 3)
        assert isinstance(outcome, RedeemOutcome)
    cancelled = await redeem(runtime, names[members[0]], "trip", "t2", quantity=2)
    assert isinstance(cancelled, RedeemOutcome)
    assert isinstance(
        await in_transaction(runtime, lambda s: service.cancel(s, cancelled.redemption.id)),
        RedemptionRow,
    )
    tickets = await entries(runtime, "trip")
    active = [(i, m) for i, m, status in tickets if status == "ACTIVE"]
    assert len(active) == sum(1 + n % 3 for n in range(12))

    record = await draw(runtime, "trip", 4)
    assert isinstance(record, DrawRecord)
    assert len(record.seed) == 64 and record.method == lottery.METHOD
    assert record.entry_count == len(active)
    assert record.entries_digest == lottery.entries_digest(i for i, _ in active)
    # anyone with the seed and the entry list gets the same winners, in the same order
    assert record.winning_entry_ids == lottery.pick_winners(record.seed, active, 4)

    after = {i: status for i, _, status in await entries(runtime, "trip")}
    assert Counter(after.values()) == {"LOST": len(active) - 4, "WON": 4, "CANCELLED": 2}
    assert {i for i, s in after.items() if s == "WON"} == set(record.winning_entry_ids)
    async with runtime.transaction() as session:
        stored = await draws.get_draw(session, record.item_id)
        statuses = Counter(
            row[0]
            for row in await session.execute(
                text("SELECT status FROM redemptions WHERE idempotency_key = 't'")
            )
        )
        winners = await service.redemptions_of_entries(session, record.winning_entry_ids)
    assert stored == record  # the stored draw re-ranks its winners the same way
    assert statuses == {"PENDING": 4, "FULFILLED": 8}  # winners await their prize
    assert [w.status for w in winners] == ["PENDING"] * 4

    # once: a second draw, new tickets and cancelling are refused; the winners are fulfilled
    before = await snapshot(runtime)
    again = await draw(runtime, "trip", 1)
    assert isinstance(again, DomainError) and again.code == "ALREADY_DONE"
    late = await redeem(runtime, names[members[1]], "trip", "late")
    assert isinstance(late, DomainError) and late.code == "NOT_ELIGIBLE"
    refused = await in_transaction(runtime, lambda s: service.cancel(s, winners[0].id))
    assert isinstance(refused, DomainError) and refused.code == "NOT_ELIGIBLE"
    async with runtime.transaction() as session:
        loser = await session.scalar(
            text(
                "SELECT min(id) FROM redemptions WHERE idempotency_key = 't'"
                " AND status = 'FULFILLED'"
            )
        )
    closed = await in_transaction(runtime, lambda s: service.fulfill(s, loser))
    assert isinstance(closed, DomainError) and closed.code == "ALREADY_DONE"
    assert await snapshot(runtime) == before
    done = await in_transaction(runtime, lambda s: service.fulfill(s, winners[0].id))
    assert isinstance(done, RedemptionRow) and done.status == "FULFILLED"


async def test_draw_refusals(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1, points=100)
    await make_item(runtime, "mug", cost=10)
    await make_item(runtime, "raffle", kind="LOTTERY", cost=10)
    outcome = await redeem(runtime, (await external_ids(runtime, [member]))[member], "raffle", "k")
    assert isinstance(outcome, RedeemOutcome)
    early = await in_transaction(runtime, lambda s: service.fulfill(s, outcome.redemption.id))
    assert isinstance(early, DomainError) and early.code == "NOT_ELIGIBLE"
    before = await snapshot(runtime)
    for key, winners, code in (
        ("nothing", 1, "NOT_FOUND"),
        ("mug", 1, "INVALID_INPUT"),
        ("raffle", 0, "INVALID_INPUT"),
        ("raffle", lottery.MAX_WINNERS + 1, "INVALID_INPUT"),
    ):
        refused = await draw(runtime, key, winners)
        assert isinstance(refused, DomainError) and refused.code == code, (key, refused)
    assert await snapshot(runtime) == before


async def test_tickets_racing_the_draw_are_either_in_it_or_refused(runtime: Runtime) -> None:
    members = await create_members(runtime, 40, points=100)
    names = await external_ids(runtime, members)
    await make_item(runtime, "raffle", kind="LOTTERY", cost=10)
    for member in members[:20]:
        assert isinstance(await redeem(runtime, names[member], "raffle", "k"), RedeemOutcome)
    racing = [redeem(runtime, names[m], "raffle", "k") for m in members[20:]]
    drawing = draw(runtime, "raffle", 3)
    results, record = await asyncio.gather(gather_all(racing), drawing)
    assert isinstance(record, DrawRecord)
    bought = [r for r in results if isinstance(r, RedeemOutcome)]
    refused = [r for r in results if isinstance(r, DomainError)]
    assert {r.code for r in refused} <= {"NOT_ELIGIBLE"}
    assert len(bought) + len(refused) == 20
    assert record.entry_count == 20 + len(bought)  # every sold ticket took part in the draw
    assert sum([await balance(runtime, m) for m in members]) == 100 * 40 - 10 * (20 + len(bought))
    tickets = await entries(runtime, "raffle")
    assert Counter(status for _, _, status in tickets) == Counter(
        {"WON": 3, "LOST": record.entry_count - 3}
    )
