"""``recordEvent`` in one statement (``quests.event_at_once.record_event_at_once``): an event that
completes nothing is one read and one writing statement without BEGIN or COMMIT; what the
statement cannot do falls back to the transaction, with nothing written twice (completions:
test_event_completion_at_once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.quests.helpers import record, upsert_quest
from tests.quests.test_quests import points
from tests.support import record_round_trips


def control(sent: list[str]) -> list[str]:
    """The BEGINs and COMMITs among the round trips."""
    words = [q.split()[0].upper().rstrip(";") for q in sent]
    return [w for w in words if w in ("BEGIN", "COMMIT")]


async def stored(runtime: Runtime, external_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT e.idempotency_key, e.result FROM events e"
                " JOIN members m ON m.id = e.member_id WHERE m.external_id = :x ORDER BY e.id"
            ),
            {"x": external_id},
        )
        return [(key, result) for key, result in rows]


async def test_an_event_completing_nothing_is_one_read_and_one_statement(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.register("walker")
    await upsert_quest(api, key="three-walks", cadence="DAILY", eventType="walk", target=3)
    await upsert_quest(api, key="far", cadence="WEEKLY", eventType="walk", target=10_000,
                       aggregate="SUM", property="meters")  # fmt: skip
    await record(api, "walker", "walk", "w1", {"meters": 500})  # the caches filled
    sent = record_round_trips(monkeypatch)
    second = await record(api, "walker", "walk", "w2", {"meters": 700})
    assert len(sent) == 2 and control(sent) == [], sent
    assert "quests_completion_needs_transaction" in sent[1]
    assert second["errors"] == [] and second["completed"] == []
    progress = {p["quest"]["key"]: p["progress"] for p in second["progressed"]}
    assert progress == {"three-walks": 2, "far": 1200}

    # a replay answers from the stored event, through the transaction: the same answer
    again = await record(api, "walker", "walk", "w2", {"meters": 700})
    assert again == second
    _, (_, second_result) = await stored(runtime, "walker")
    assert second_result["completed"] == [] and second_result["awarded"] == []
    assert len(second_result["progressed"]) == 2
    me = (await api.as_member("walker", "{ me { lastActiveAt } }")).data["me"]
    assert me["lastActiveAt"] is not None


async def test_a_completion_before_the_campaigns_are_cached_is_recorded_in_a_transaction(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Points rewards need the campaigns' multiplier, which this process has not read yet."""
    await api.register("finisher")
    await upsert_quest(api, key="two-visits", cadence="ONCE", eventType="visit", target=2)
    await record(api, "finisher", "visit", "v1")
    sent = record_round_trips(monkeypatch)
    done = await record(api, "finisher", "visit", "v2")
    # the one statement tried and undid itself, then the transaction recorded the event (and
    # filled the campaigns' cache)
    assert "quests_completion_needs_transaction" in sent[1]
    assert control(sent) == ["BEGIN", "COMMIT"]
    assert [c["quest"]["key"] for c in done["completed"]] == ["two-visits"]
    assert done["awarded"] == [{"kind": "POINTS", "currency": "points", "amount": 10, "key": None}]
    assert await points(runtime, "finisher") == 10
    assert [key for key, _ in await stored(runtime, "finisher")] == ["v1", "v2"]


async def test_twenty_twins_at_once_count_once(api: GraphQLClient, runtime: Runtime) -> None:
    await api.register("twin")
    await upsert_quest(api, key="many-taps", cadence="DAILY", eventType="tap", target=100)
    await record(api, "twin", "tap", "t0")
    answers = await asyncio.gather(*(record(api, "twin", "tap", "t1") for _ in range(20)))
    assert all(a["errors"] == [] for a in answers)
    assert len({a["event"]["id"] for a in answers}) == 1
    assert {a["progressed"][0]["progress"] for a in answers} == {2}
    assert [key for key, _ in await stored(runtime, "twin")] == ["t0", "t1"]


async def test_a_webhook_on_quest_completed_sends_events_through_the_transaction(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.webhooks.helpers import outbox, subscribe

    await subscribe(runtime, "http://127.0.0.1:9/hooks", ["quest.completed"])
    await api.register("hooked")
    await upsert_quest(api, key="two-runs", cadence="ONCE", eventType="run", target=2)
    await record(api, "hooked", "run", "r1")
    sent = record_round_trips(monkeypatch)
    done = await record(api, "hooked", "run", "r2")
    assert control(sent) == ["BEGIN", "COMMIT"]
    assert "quests_completion_needs_transaction" not in " ".join(sent)  # no attempt first
    assert [c["quest"]["key"] for c in done["completed"]] == ["two-runs"]
    assert [event["type"] for event in await outbox(runtime)] == ["quest.completed"]


async def test_periods_are_in_the_members_own_timezone_else_the_programs(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.register("kenji", timezone="Asia/Tokyo")
    await api.register("ana")
    await upsert_quest(api, key="daily-steps", cadence="DAILY", eventType="step", target=5)
    await record(api, "ana", "step", "warm")  # the caches filled
    # 20:00 UTC is 05:00 the next day in Tokyo: the two days differ
    now = datetime.now(UTC)
    at = datetime.combine(now.date(), time(20), UTC)
    at = at if at <= now else at - timedelta(days=1)
    sent = record_round_trips(monkeypatch)
    answer = await record(api, "kenji", "step", "s1", occurred_at=at)
    assert len(sent) == 2 and control(sent) == [], sent
    tokyo = ZoneInfo("Asia/Tokyo")
    start = datetime.fromisoformat(answer["progressed"][0]["periodStart"])
    assert start == datetime.combine(at.astimezone(tokyo).date(), time(0), tokyo)
    assert answer["progressed"][0]["progress"] == 1
    assert [key for key, _ in await stored(runtime, "kenji")] == ["s1"]

    utc = await record(api, "ana", "step", "s1", occurred_at=at)
    start = datetime.fromisoformat(utc["progressed"][0]["periodStart"])
    assert start == datetime.combine(at.date(), time(0), UTC)


async def test_a_quest_with_a_minimum_tier_advances_only_for_members_at_that_tier(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.members.helpers import earn_xp, make_ladder

    await make_ladder(runtime)
    await api.register("newcomer")
    veteran = await api.register("veteran")
    await earn_xp(runtime, int(veteran["id"]), 2_500, "xp-1", datetime.now(UTC))
    await upsert_quest(api, key="for-all", cadence="DAILY", eventType="shop", target=5)
    await upsert_quest(api, key="for-gold", cadence="DAILY", eventType="shop", target=5,
                       minTier="gold")  # fmt: skip
    await record(api, "newcomer", "shop", "warm")  # the caches filled
    sent = record_round_trips(monkeypatch)
    veteran_answer = await record(api, "veteran", "shop", "v1")
    assert len(sent) == 2 and control(sent) == [], sent
    assert sorted(p["quest"]["key"] for p in veteran_answer["progressed"]) == [
        "for-all",
        "for-gold",
    ]
    newcomer_answer = await record(api, "newcomer", "shop", "n1")
    assert [p["quest"]["key"] for p in newcomer_answer["progressed"]] == ["for-all"]
    assert newcomer_answer["progressed"][0]["progress"] == 2


async def test_refusals_and_referred_members_in_the_one_statement_path(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the caches filled: an unknown or suspended member is refused with its code and
    nothing is stored, and a referred member's event goes through the transaction (referral
    rewards)."""
    await api.register("sleeper")
    await upsert_quest(api, key="any-tap", cadence="DAILY", eventType="tap", target=50)
    await record(api, "sleeper", "tap", "warm")  # the caches filled
    unknown = await record(api, "nobody", "tap", "t1")
    assert [(e["code"], e["field"]) for e in unknown["errors"]] == [("NOT_FOUND", "externalId")]
    code = (await api.admin('{ member(externalId: "sleeper") { referralCode } }')).data
    await api.register("friend", referralCode=code["member"]["referralCode"])
    sent = record_round_trips(monkeypatch)
    referred = await record(api, "friend", "tap", "f1")
    assert control(sent) == ["BEGIN", "COMMIT"], sent
    assert referred["errors"] == [] and referred["progressed"][0]["progress"] == 1
    await api.admin(
        """mutation { setMemberStatus(input: {externalId: "sleeper", status: "suspended"}) {
             errors { code } } }"""
    )
    suspended = await record(api, "sleeper", "tap", "t1")
    assert [e["code"] for e in suspended["errors"]] == ["NOT_ELIGIBLE"]
    assert [key for key, _ in await stored(runtime, "sleeper")] == ["warm"]


async def test_a_day_already_counted_is_answered_but_not_written_again(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second event on the same local day changes nothing on DISTINCT_DAYS and STREAK_DAYS
    quests: their rows are not rewritten, and both paths still answer them as progressed."""

    async def written() -> list[tuple[str, datetime]]:
        async with runtime.sessionmaker() as session:
            rows = await session.execute(
                text("SELECT aggregate, updated_at FROM quest_progress ORDER BY id")
            )
            return [(aggregate, at) for aggregate, at in rows]

    await api.register("regular")
    await upsert_quest(api, key="three-days", cadence="WEEKLY", eventType="login", target=3,
                       aggregate="DISTINCT_DAYS")  # fmt: skip
    await upsert_quest(api, key="streak", cadence="ONCE", eventType="login", target=5,
                       aggregate="STREAK_DAYS")  # fmt: skip
    await upsert_quest(api, key="logins", cadence="DAILY", eventType="login", target=9)
    await record(api, "regular", "login", "l1")  # through the transaction: caches filled
    before = await written()
    sent = record_round_trips(monkeypatch)
    at_once = await record(api, "regular", "login", "l2")
    assert len(sent) == 2 and control(sent) == [], sent
    await upsert_quest(api, key="other", cadence="DAILY", eventType="other", target=1)
    sent.clear()
    in_transaction = await record(api, "regular", "login", "l3")  # the quests' cache emptied
    assert control(sent) == ["BEGIN", "COMMIT"], sent
    for answer, count in ((at_once, 2), (in_transaction, 3)):
        progress = {p["quest"]["key"]: p["progress"] for p in answer["progressed"]}
        assert progress == {"three-days": 1, "streak": 1, "logins": count}
    after = await written()
    assert [row for row in after if row[0] != "COUNT"] == [r for r in before if r[0] != "COUNT"]
    assert [row for row in after if row[0] == "COUNT"] != [r for r in before if r[0] == "COUNT"]
    _, second, third = await stored(runtime, "regular")
    assert len(second[1]["progressed"]) == len(third[1]["progressed"]) == 3
