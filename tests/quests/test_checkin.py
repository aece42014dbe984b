"""Check-in streaks: once per local day, streak and record, escalating rewards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.queries import balances
from members.service import require_member
from quests.checkin import DayReward, check_in, configure_rewards
from server.errors import DomainError
from server.runtime import Runtime
from tests.api import GraphQLClient

CHECK_IN = """mutation($input: CheckInInput) { checkIn(input: $input) {
  streak { current longest } awarded { kind amount } errors { code } } }"""


async def _check_in(runtime: Runtime, external_id: str, now: datetime) -> tuple[int, int, int]:
    async with runtime.transaction() as session:
        member = await require_member(session, external_id)
        result = await check_in(session, member, now)
        earned = sum(a.amount or 0 for a in result.awards if a.currency == "points")
        return result.streak.current, result.streak.longest, earned


async def test_streak_grows_breaks_and_escalates(api: GraphQLClient, runtime: Runtime) -> None:
    await api.register("daily", timezone="UTC")
    async with runtime.transaction() as session:
        await configure_rewards(session, [DayReward(0, points=10), DayReward(3, points=50, xp=5)])
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    days = [await _check_in(runtime, "daily", start + timedelta(days=i)) for i in range(3)]
    assert days == [(1, 1, 10), (2, 2, 10), (3, 3, 50)]
    with pytest.raises(DomainError) as twice:
        await _check_in(runtime, "daily", start + timedelta(days=2, hours=10))
    assert twice.value.code.value == "ALREADY_DONE"
    after_gap = await _check_in(runtime, "daily", start + timedelta(days=5))
    assert after_gap == (1, 3, 10)  # a missed day restarts the streak; the record stays
    async with runtime.sessionmaker() as session:
        member = await require_member(session, "daily")
        assert (await balances(session, member.id)).available == 80
        assert (await balances(session, member.id, "xp")).available == 5


async def test_check_in_uses_the_member_local_day(api: GraphQLClient, runtime: Runtime) -> None:
    await api.register("tokyo-checker", timezone="Asia/Tokyo")
    # 14:30 UTC and 15:30 UTC fall on two different days in Tokyo (midnight there is 15:00 UTC)
    first = await _check_in(runtime, "tokyo-checker", datetime(2026, 11, 1, 14, 30, tzinfo=UTC))
    second = await _check_in(runtime, "tokyo-checker", datetime(2026, 11, 1, 15, 30, tzinfo=UTC))
    assert (first[0], second[0]) == (1, 2)


async def test_check_in_over_graphql(api: GraphQLClient) -> None:
    await api.register("gq")
    first = (await api.as_member("gq", CHECK_IN, {"input": {"idempotencyKey": "c1"}})).data
    assert first["checkIn"]["streak"] == {"current": 1, "longest": 1}
    retried = (await api.as_member("gq", CHECK_IN, {"input": {"idempotencyKey": "c1"}})).data
    assert retried["checkIn"]["errors"] == []  # the same request again: the same answer
    second = (await api.as_member("gq", CHECK_IN, {"input": {"idempotencyKey": "c2"}})).data
    assert [e["code"] for e in second["checkIn"]["errors"]] == ["ALREADY_DONE"]
    streak = await api.as_member("gq", "{ me { streak { current longest lastCheckIn } } }")
    assert streak.data["me"]["streak"]["current"] == 1
    anonymous = await api.post(CHECK_IN, {"input": {}})
    assert anonymous.error_codes == ["UNAUTHENTICATED"]


async def test_check_in_counts_for_quests(api: GraphQLClient) -> None:
    from tests.quests.helpers import upsert_quest

    await api.register("questy")
    await upsert_quest(
        api,
        key="check-in-once",
        cadence="ONCE",
        eventType="check_in",
        target=1,
        rewards=[{"kind": "POINTS", "amount": 7}],
    )
    result = (await api.as_member("questy", CHECK_IN, {"input": {}})).data["checkIn"]
    assert {"kind": "POINTS", "amount": 7} in result["awarded"]


async def test_bad_reward_table(runtime: Runtime) -> None:
    async with runtime.transaction() as session:
        for rewards in ([DayReward(-1)], [DayReward(2), DayReward(2)], [DayReward(1, points=-5)]):
            with pytest.raises(DomainError):
                await configure_rewards(session, rewards)
