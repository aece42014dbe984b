"""Boards through the services: live updates after commit, ordering and ties, windows around
a member, hidden members, period rollover at local midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leaderboards import service as boards
from leaderboards import store
from leaderboards.encoding import decode
from leaderboards.periods import DAILY, parse_period, period_at
from ledger import service as ledger
from members.program import configure_program
from members.service import set_status
from server.cache import clear_all
from server.runtime import Runtime
from tests.leaderboards.conftest import Clock
from tests.leaderboards.helpers import (
    board_key_now,
    event,
    grant,
    make_board,
    make_member,
    standings,
)

TICK = 0.03  # a little more than a DAILY tick (20 ms): the next commit is a later tick


def ranked(result: boards.Standings) -> list[tuple[int, int, int]]:
    return [(e.rank, e.member_id, e.score) for e in result.entries]


async def test_scores_follow_commits_and_ties_go_to_who_got_there_first(
    runtime: Runtime,
) -> None:
    board = await make_board(runtime, "daily-points")
    xp_board = await make_board(runtime, "daily-xp", metric=boards.XP_EARNED)
    ann, bob, cid = [await make_member(runtime, name) for name in ("ann", "bob", "cid")]

    await grant(runtime, bob, 50, pause=TICK)  # bob reaches 50 first
    await grant(runtime, ann, 30, pause=TICK)
    await grant(runtime, ann, 20, pause=TICK)  # ann reaches 50 later
    await grant(runtime, cid, 70, currency="xp", pause=TICK)  # xp: not on the points board
    assert ranked(await standings(runtime, board)) == [(1, bob, 50), (2, ann, 50)]
    assert ranked(await standings(runtime, xp_board)) == [(1, cid, 70)]

    await grant(runtime, bob, 1, pause=TICK)
    await grant(runtime, ann, 1, pause=TICK)  # equal again; bob still first
    await grant(runtime, cid, 51)  # cid gets there last
    assert ranked(await standings(runtime, board)) == [(1, bob, 51), (2, ann, 51), (3, cid, 51)]


async def test_only_grants_count_not_transfers_pending_or_returns(runtime: Runtime) -> None:
    board = await make_board(runtime, "earned")
    ann, bob = await make_member(runtime, "ann"), await make_member(runtime, "bob")
    async with runtime.transaction() as session:
        await ledger.grant(session, ann, 100, idempotency_key="a1")
        await ledger.credit_pending(session, bob, 40, idempotency_key="p1", pending_days=1)
    async with runtime.transaction() as session:
        await ledger.transfer(session, ann, bob, 30, idempotency_key="t1")
        spent = await ledger.spend(session, ann, 10, idempotency_key="s1")
    async with runtime.transaction() as session:
        await ledger.reverse(session, spent.transaction_id)  # points come back: not earned
        await ledger.grant(session, ann, 100, idempotency_key="a1")  # a replay: no signal
    assert ranked(await standings(runtime, board)) == [(1, ann, 100)]


async def test_around_a_member_at_the_top_middle_and_bottom(runtime: Runtime) -> None:
    board = await make_board(runtime, "around", period="ALL_TIME")
    ids = [await make_member(runtime, f"m{i:02d}") for i in range(1, 21)]
    async with runtime.transaction() as session:  # m01 scores 20 ... m20 scores 1
        for rank, member in enumerate(ids, start=1):
            await ledger.grant(session, member, 21 - rank, idempotency_key=f"k{rank}")

    top = await standings(runtime, board, first=5, around_member_id=ids[0], around_given=True)
    assert [e.rank for e in top.entries] == [1, 2, 3, 4, 5]
    middle = await standings(runtime, board, first=5, around_member_id=ids[9], around_given=True)
    assert [(e.rank, e.member_id) for e in middle.entries] == [
        (8, ids[7]), (9, ids[8]), (10, ids[9]), (11, ids[10]), (12, ids[11]),
    ]  # fmt: skip
    even = await standings(runtime, board, first=4, around_member_id=ids[9], around_given=True)
    assert [e.rank for e in even.entries] == [9, 10, 11, 12]
    bottom = await standings(runtime, board, first=5, around_member_id=ids[19], around_given=True)
    assert [e.rank for e in bottom.entries] == [16, 17, 18, 19, 20]
    assert bottom.entries[-1].member_id == ids[19] and bottom.total == 20
    nobody = await standings(runtime, board, first=5, around_member_id=None, around_given=True)
    assert nobody.entries == [] and nobody.total == 20
    mine = await standings(runtime, board, first=3, me_member_id=ids[14])
    assert mine.me == boards.Entry(15, ids[14], 6)
    assert [e.rank for e in mine.entries] == [1, 2, 3]


async def test_suspended_members_are_hidden_and_ranks_stay_dense(runtime: Runtime) -> None:
    board = await make_board(runtime, "fair", period="ALL_TIME")
    ids = [await make_member(runtime, f"p{i}") for i in range(1, 7)]
    async with runtime.transaction() as session:
        for n, member in enumerate(ids):
            await ledger.grant(session, member, 100 - n, idempotency_key=f"f{n}")
        await set_status(session, "p2", "suspended")
        await set_status(session, "p4", "suspended")
    clear_all()  # the hidden-members cache refreshes every few seconds; do not wait here
    result = await standings(runtime, board, first=3, me_member_id=ids[4])
    assert ranked(result) == [(1, ids[0], 100), (2, ids[2], 98), (3, ids[4], 96)]
    assert result.total == 4 and result.me == boards.Entry(3, ids[4], 96)
    around = await standings(runtime, board, first=3, around_member_id=ids[5], around_given=True)
    assert ranked(around) == [(2, ids[2], 98), (3, ids[4], 96), (4, ids[5], 95)]
    hidden = await standings(runtime, board, first=3, around_member_id=ids[1], around_given=True)
    assert hidden.entries == []
    assert (await standings(runtime, board, me_member_id=ids[3])).me is None
    async with runtime.transaction() as session:
        await set_status(session, "p2", "active")
    clear_all()
    assert [e.member_id for e in (await standings(runtime, board, first=2)).entries] == ids[:2]


async def test_event_counts_roll_over_at_local_midnight(
    runtime: Runtime, frozen_clock: Clock
) -> None:
    tokyo = "Asia/Tokyo"
    async with runtime.transaction() as session:
        await configure_program(session, {"timezone": tokyo})
    board = await make_board(runtime, "daily-coffee", boards.EVENT_COUNT, "DAILY", "coffee")
    await make_member(runtime, "kai")
    await make_member(runtime, "yui")
    # yesterday's local midnight in Tokyo: both sides are in the past, within 7 days
    today = datetime.now(ZoneInfo(tokyo)).date()
    midnight = datetime.combine(today - timedelta(days=1), datetime.min.time(), ZoneInfo(tokyo))
    before, after = midnight - timedelta(seconds=1), midnight + timedelta(seconds=1)
    await event(runtime, "kai", "coffee", before)
    await event(runtime, "kai", "coffee", before - timedelta(minutes=1))
    await event(runtime, "yui", "coffee", after)
    await event(runtime, "yui", "tea", after)  # another type: not counted

    frozen_clock.set(before.astimezone(UTC))
    evening = await standings(runtime, board)
    assert evening.period.id == (today - timedelta(days=2)).isoformat()
    assert [(e.score, e.rank) for e in evening.entries] == [(2, 1)]
    frozen_clock.set(after.astimezone(UTC))
    morning = await standings(runtime, board)
    assert morning.period.id == (today - timedelta(days=1)).isoformat()
    assert morning.period.start == midnight.astimezone(UTC)
    assert [(e.score, e.rank) for e in morning.entries] == [(1, 1)]
    # a named period reads the same key
    named = parse_period(DAILY, evening.period.id, tokyo)
    assert ranked(await standings(runtime, board, period=named)) == ranked(evening)
    # each key expires two days after its period ends
    ttl = await runtime.redis.ttl(await board_key_now(runtime, board))
    assert morning.period.end is not None
    expected = (morning.period.end + boards.GRACE - datetime.now(UTC)).total_seconds()
    assert abs(ttl - expected) < 5


async def test_ties_within_an_event_board_follow_occurred_at(runtime: Runtime) -> None:
    board = await make_board(runtime, "reviews", boards.EVENT_COUNT, "WEEKLY", "review")
    await make_member(runtime, "late")
    await make_member(runtime, "early")
    now = datetime.now(UTC)
    await event(runtime, "late", "review", now - timedelta(seconds=1))
    await event(runtime, "early", "review", now - timedelta(seconds=5))  # reported later
    result = await standings(runtime, board)
    assert [e.member_id for e in result.entries] == [2, 1]  # early (id 2) did it first


@pytest.mark.parametrize("first", [0, 101])
async def test_first_is_bounded(runtime: Runtime, first: int) -> None:
    board = await make_board(runtime, "bounded")
    with pytest.raises(boards.DomainError):
        await standings(runtime, board, first=first)


async def test_definition_validation(runtime: Runtime) -> None:
    bad = [
        boards.BoardInput(key="Bad Key", name="x", metric="POINTS_EARNED", period="DAILY"),
        boards.BoardInput(key="k", name="x", metric="EVENT_COUNT", period="DAILY"),
        boards.BoardInput(key="k", name="x", metric="POINTS_EARNED", period="DAILY",
                          event_type="coffee"),
        boards.BoardInput(key="k", name="x", metric="POINTS_EARNED", period="HOURLY"),
        boards.BoardInput(key="k", name="x", metric="POINTS_EARNED", period="DAILY",
                          rewards=(boards.RewardRule(1, 3, 10), boards.RewardRule(3, 3, 5))),
        boards.BoardInput(key="k", name="x", metric="POINTS_EARNED", period="DAILY",
                          rewards=(boards.RewardRule(1, 1, 10, "gold-coins"),)),
    ]  # fmt: skip
    for data in bad:
        with pytest.raises(boards.DomainError) as caught:
            async with runtime.transaction() as session:
                await boards.upsert_board(session, data)
        assert caught.value.code.value == "INVALID_INPUT"
    board = await make_board(runtime, "weekly-xp", boards.XP_EARNED, "WEEKLY")
    async with runtime.transaction() as session:
        renamed = await boards.upsert_board(
            session,
            boards.BoardInput(key="weekly-xp", name="Renamed", metric="XP_EARNED", period="WEEKLY"),
        )
        assert not renamed.recount and renamed.board.version == board.version
        recounted = await boards.upsert_board(
            session,
            boards.BoardInput(key="weekly-xp", name="Renamed", metric="XP_EARNED", period="DAILY"),
        )
        assert recounted.recount and recounted.board.version == board.version + 1


async def test_a_late_fact_keeps_the_later_time(runtime: Runtime) -> None:
    period = period_at("ALL_TIME", datetime.now(UTC), "UTC")
    key = "ql:lb:{late:v1:all}"
    await store.apply(runtime.redis, [store.Fact(key, 1, 5, 900, 0, "t:1")])
    await store.apply(runtime.redis, [store.Fact(key, 1, 5, 100, 0, "t:2")])
    assert decode(await runtime.redis.zscore(key, "1") or 0) == (10, 900)
    assert period.id == "all"
