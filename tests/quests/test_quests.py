"""Quests through recordEvent: periods in the member's timezone, aggregates, idempotency,
claims, and completion at most once per period even under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ledger.queries import balances
from members.service import require_member
from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.quests.helpers import record, upsert_quest

TOKYO = ZoneInfo("Asia/Tokyo")


async def points(runtime: Runtime, external_id: str, currency: str = "points") -> int:
    async with runtime.sessionmaker() as session:
        member = await require_member(session, external_id)
        return (await balances(session, member.id, currency)).available


def local(days_ago: int, at: time, zone: ZoneInfo = TOKYO) -> datetime:
    day = datetime.now(zone).date() - timedelta(days=days_ago)
    return datetime.combine(day, at, tzinfo=zone)


async def test_daily_quest_completes_once_per_local_day(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await api.register("kenji", timezone="Asia/Tokyo")
    assert (
        await upsert_quest(
            api,
            key="two-coffees",
            cadence="DAILY",
            eventType="purchase",
            target=2,
            filter={"category": "coffee"},
        )
    )["errors"] == []
    day1 = local(2, time(9))
    first = await record(api, "kenji", "purchase", "e1", {"category": "coffee"}, day1)
    assert [p["progress"] for p in first["progressed"]] == [1]
    assert first["completed"] == []
    tea = await record(api, "kenji", "purchase", "e2", {"category": "tea"}, day1)
    assert tea["progressed"] == []  # the filter does not match
    second = await record(api, "kenji", "purchase", "e3", {"category": "coffee"}, day1)
    assert [c["quest"]["key"] for c in second["completed"]] == ["two-coffees"]
    assert second["awarded"] == [
        {"kind": "POINTS", "currency": "points", "amount": 10, "key": None}
    ]
    third = await record(api, "kenji", "purchase", "e4", {"category": "coffee"}, day1)
    assert third["progressed"] == [] and third["completed"] == []  # done for that day
    for key in ("e5", "e6"):
        nxt = await record(api, "kenji", "purchase", key, {"category": "coffee"}, local(1, time(9)))
    assert [c["quest"]["key"] for c in nxt["completed"]] == ["two-coffees"]
    assert await points(runtime, "kenji") == 20


async def test_concurrent_events_complete_a_period_once(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await api.register("racer")
    await upsert_quest(api, key="one-visit", cadence="DAILY", eventType="visit", target=1)
    results = await asyncio.gather(*(record(api, "racer", "visit", f"v{i}") for i in range(8)))
    assert sum(len(r["completed"]) for r in results) == 1
    assert all(r["errors"] == [] for r in results)
    assert await points(runtime, "racer") == 10


async def test_local_midnight_boundary(api: GraphQLClient, runtime: Runtime) -> None:
    await api.register("night-owl", timezone="Asia/Tokyo")
    await upsert_quest(api, key="daily-login", cadence="DAILY", eventType="login", target=1)
    before = await record(api, "night-owl", "login", "l1", occurred_at=local(2, time(23, 59)))
    after = await record(api, "night-owl", "login", "l2", occurred_at=local(1, time(0, 1)))
    assert len(before["completed"]) == 1 and len(after["completed"]) == 1
    start_before = datetime.fromisoformat(before["progressed"][0]["periodStart"])
    start_after = datetime.fromisoformat(after["progressed"][0]["periodStart"])
    assert start_before.astimezone(TOKYO).time() == time(0)
    assert start_after - start_before == timedelta(days=1)
    same_day = await record(api, "night-owl", "login", "l3", occurred_at=local(1, time(23, 58)))
    assert same_day["completed"] == []
    assert await points(runtime, "night-owl") == 20


async def test_weekly_and_monthly_periods(api: GraphQLClient) -> None:
    await api.register("planner", timezone="Europe/Paris")
    await upsert_quest(api, key="weekly", cadence="WEEKLY", eventType="run", target=100)
    await upsert_quest(api, key="monthly", cadence="MONTHLY", eventType="run", target=100)
    event = await record(api, "planner", "run", "r1")
    periods = {p["quest"]["key"]: p for p in event["progressed"]}
    paris = ZoneInfo("Europe/Paris")
    week_start = datetime.fromisoformat(periods["weekly"]["periodStart"]).astimezone(paris)
    week_end = datetime.fromisoformat(periods["weekly"]["periodEnd"]).astimezone(paris)
    assert week_start.weekday() == 0 and week_start.time() == time(0)
    assert (week_end.date() - week_start.date()).days == 7
    month_start = datetime.fromisoformat(periods["monthly"]["periodStart"]).astimezone(paris)
    month_end = datetime.fromisoformat(periods["monthly"]["periodEnd"]).astimezone(paris)
    assert month_start.day == 1 and month_start.time() == time(0)
    assert month_end.date() == (month_start.date() + timedelta(days=32)).replace(day=1)
    assert month_end.time() == time(0)


async def test_sum_distinct_days_and_streak_days(api: GraphQLClient) -> None:
    await api.register("sam", timezone="UTC")
    await upsert_quest(
        api,
        key="spend-50",
        cadence="ONCE",
        eventType="purchase",
        target=50,
        aggregate="SUM",
        property="amount",
    )
    await upsert_quest(
        api,
        key="three-days",
        cadence="ONCE",
        eventType="purchase",
        target=3,
        aggregate="DISTINCT_DAYS",
    )
    await upsert_quest(
        api, key="streak-3", cadence="ONCE", eventType="purchase", target=3, aggregate="STREAK_DAYS"
    )

    def at(days_ago: int, hour: int = 12) -> datetime:
        return local(days_ago, time(hour), ZoneInfo("UTC"))

    async def progress(key: str, idem: str, amount: float, when: datetime) -> dict[str, int]:
        result = await record(api, "sam", "purchase", idem, {"amount": amount}, when)
        return {p["quest"]["key"]: p["progress"] for p in result["progressed"]}

    assert await progress("a", "p1", 12.5, at(6)) == {
        "spend-50": 12,
        "three-days": 1,
        "streak-3": 1,
    }
    assert await progress("a", "p2", 12.5, at(6, 18)) == {
        "spend-50": 25,
        "three-days": 1,
        "streak-3": 1,
    }
    # a gap of a day: the streak restarts, distinct days still count
    assert await progress("a", "p3", 1, at(4)) == {"spend-50": 26, "three-days": 2, "streak-3": 1}
    assert await progress("a", "p4", 1, at(3)) == {"spend-50": 27, "three-days": 3, "streak-3": 2}
    last = await record(api, "sam", "purchase", "p5", {"amount": 30}, at(2))
    assert sorted(c["quest"]["key"] for c in last["completed"]) == ["spend-50", "streak-3"]
    ignored = await record(api, "sam", "purchase", "p6", {"amount": "lots"}, at(1))
    assert "spend-50" not in [p["quest"]["key"] for p in ignored["progressed"]]


async def test_replay_changes_nothing_and_conflicts_are_coded(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await api.register("retry")
    await upsert_quest(api, key="first-buy", cadence="ONCE", eventType="purchase", target=1)
    first = await record(api, "retry", "purchase", "same", {"amount": 5})
    again = await record(api, "retry", "purchase", "same", {"amount": 5})
    assert again["event"]["id"] == first["event"]["id"]
    assert again["awarded"] == first["awarded"]
    assert await points(runtime, "retry") == 10
    other = await record(api, "retry", "purchase", "same", {"amount": 6})
    assert [e["code"] for e in other["errors"]] == ["IDEMPOTENCY_CONFLICT"]
    assert await points(runtime, "retry") == 10


async def test_event_input_errors(api: GraphQLClient) -> None:
    await api.register("bad")
    now = datetime.now(UTC)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"occurredAt": (now - timedelta(days=8)).isoformat()}, "INVALID_INPUT", "occurredAt"),
        ({"occurredAt": (now + timedelta(hours=1)).isoformat()}, "INVALID_INPUT", "occurredAt"),
        ({"type": "no spaces allowed"}, "INVALID_INPUT", "type"),
        ({"properties": [1, 2]}, "INVALID_INPUT", "properties"),
        ({"externalId": "nobody"}, "NOT_FOUND", "externalId"),
        ({"idempotencyKey": ""}, "INVALID_INPUT", "idempotencyKey"),
    ]
    from tests.quests.helpers import RECORD_EVENT

    for override, code, field in cases:
        variables = {"externalId": "bad", "type": "visit", "idempotencyKey": "k", **override}
        result = (await api.admin(RECORD_EVENT, {"input": variables})).data["recordEvent"]
        assert [(e["code"], e["field"]) for e in result["errors"]] == [(code, field)], override


async def test_suspended_member_cannot_earn(api: GraphQLClient, runtime: Runtime) -> None:
    await api.register("frozen")
    await upsert_quest(api, key="any-visit", cadence="ONCE", eventType="visit", target=1)
    await api.admin(
        """mutation { setMemberStatus(input: {externalId: "frozen", status: "suspended"}) {
             errors { code } } }"""
    )
    result = await record(api, "frozen", "visit", "k1")
    assert [e["code"] for e in result["errors"]] == ["NOT_ELIGIBLE"]
    assert await points(runtime, "frozen") == 0


async def test_filter_validation(api: GraphQLClient) -> None:
    bad_filters = [
        {"amount": {"between": [1, 2]}},  # unknown operator
        {"amount": {"gte": "ten"}},  # wrong type
        {"bad property": 1},  # bad property name
        {"store": {"in": []}},  # empty list
        ["not", "an", "object"],
    ]
    for event_filter in bad_filters:
        payload = await upsert_quest(
            api,
            key="filtered",
            cadence="DAILY",
            eventType="purchase",
            target=1,
            filter=event_filter,
        )
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [
            ("INVALID_INPUT", "filter")
        ], event_filter
    others: list[tuple[dict[str, Any], str]] = [
        ({"aggregate": "SUM"}, "property"),
        ({"target": 0}, "target"),
        ({"rewards": []}, "rewards"),
        ({"rewards": [{"kind": "POINTS", "amount": -1}]}, "rewards"),
        ({"minTier": "platinum"}, "minTier"),
    ]
    for override, field in others:
        payload = await upsert_quest(
            api,
            **{"key": "q", "cadence": "DAILY", "eventType": "purchase", "target": 1, **override},
        )
        assert [e["field"] for e in payload["errors"]] == [field], override
    assert (await api.post("{ quests { key } }")).data == {"quests": []}


async def test_manual_claim_and_editing_keeps_granted_rewards(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await api.register("claimer")
    await upsert_quest(
        api,
        key="review",
        cadence="ONCE",
        eventType="review",
        target=1,
        autoClaim=False,
        rewards=[{"kind": "POINTS", "amount": 40}],
    )
    done = await record(api, "claimer", "review", "r1")
    assert done["completed"][0]["status"] == "COMPLETED" and done["awarded"] == []
    # the quest is edited after completion: the completed period keeps its original reward
    await upsert_quest(
        api,
        key="review",
        cadence="ONCE",
        eventType="review",
        target=1,
        autoClaim=False,
        rewards=[{"kind": "POINTS", "amount": 999}],
    )
    claim = """mutation { claimQuestReward(input: {questKey: "review"}) {
      progress { status } awarded { amount } errors { code } } }"""
    claimed = (await api.as_member("claimer", claim)).data["claimQuestReward"]
    assert claimed["awarded"] == [{"amount": 40}]
    assert claimed["progress"]["status"] == "CLAIMED"
    again = (await api.as_member("claimer", claim)).data["claimQuestReward"]
    assert [e["code"] for e in again["errors"]] == ["ALREADY_DONE"]
    assert await points(runtime, "claimer") == 40
    quests = await api.as_member("claimer", "{ me { quests { quest { key } status } } }")
    assert quests.data["me"]["quests"] == [{"quest": {"key": "review"}, "status": "CLAIMED"}]


async def test_xp_reward_upgrades_tier(api: GraphQLClient, runtime: Runtime) -> None:
    from tests.members.helpers import make_ladder

    await make_ladder(runtime)
    await api.register("grower")
    await upsert_quest(
        api,
        key="big-xp",
        cadence="ONCE",
        eventType="purchase",
        target=1,
        rewards=[{"kind": "XP", "amount": 600}, {"kind": "POINTS", "amount": 100}],
    )
    result = await record(api, "grower", "purchase", "x1")
    # points are multiplied by the tier held when the rewards are granted (XP first: silver)
    assert {(a["kind"], a["amount"]) for a in result["awarded"]} == {("XP", 600), ("POINTS", 125)}
    me = (await api.as_member("grower", "{ me { tier { key } } }")).data["me"]
    assert me["tier"] == {"key": "silver"}
    assert await points(runtime, "grower", "xp") == 600


async def _stored(runtime: Runtime, external_id: str, key: str) -> tuple[Any, datetime]:
    """The answer stored with an event, and its member's last activity."""
    from sqlalchemy import text

    async with runtime.sessionmaker() as session:
        row = (
            await session.execute(
                text(
                    "SELECT e.result, m.last_active_at FROM events e"
                    " JOIN members m ON m.id = e.member_id"
                    " WHERE m.external_id = :m AND e.idempotency_key = :k"
                ),
                {"m": external_id, "k": key},
            )
        ).one()
    return row[0], row[1]


async def test_every_event_stores_its_answer_and_the_members_activity(
    api: GraphQLClient, runtime: Runtime
) -> None:
    """With or without progress or completions, the stored answer is what the replay returns
    and the member's activity only moves forward."""
    now = datetime.now(UTC).replace(microsecond=0)
    await upsert_quest(api, key="thrice", cadence="ONCE", eventType="purchase", target=3)
    await api.register("walker")

    first = await record(api, "walker", "purchase", "w1", {}, now - timedelta(minutes=10))
    result, active = await _stored(runtime, "walker", "w1")
    assert len(result["progressed"]) == 1
    assert result["completed"] == [] and result["awarded"] == []
    assert active == now - timedelta(minutes=10)
    replayed = await record(api, "walker", "purchase", "w1", {}, now - timedelta(minutes=10))
    assert replayed["progressed"] == first["progressed"]
    assert replayed["completed"] == [] and replayed["awarded"] == []

    await record(api, "walker", "purchase", "w0", {}, now - timedelta(minutes=20))  # late
    assert (await _stored(runtime, "walker", "w0"))[1] == now - timedelta(minutes=10)

    done = await record(api, "walker", "purchase", "w2", {}, now - timedelta(minutes=5))
    assert [c["quest"]["key"] for c in done["completed"]] == ["thrice"]
    result, active = await _stored(runtime, "walker", "w2")
    assert len(result["completed"]) == 1 and result["awarded"][0]["amount"] == 10
    assert active == now - timedelta(minutes=5)

    await record(api, "walker", "visit", "w3", {}, now)  # no quest listens for visits
    result, active = await _stored(runtime, "walker", "w3")
    assert result == {"progressed": [], "completed": [], "awarded": []}
    assert active == now
