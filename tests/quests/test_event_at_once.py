"""``recordEvent`` in one statement (``quests.events.record_event_at_once``): an event that
completes nothing is one read and one writing statement without BEGIN or COMMIT; everything
else falls back to the transaction, with nothing written twice."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def test_an_event_completing_a_quest_is_recorded_in_a_transaction(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.register("finisher")
    await upsert_quest(api, key="two-visits", cadence="ONCE", eventType="visit", target=2)
    await record(api, "finisher", "visit", "v1")
    sent = record_round_trips(monkeypatch)
    done = await record(api, "finisher", "visit", "v2")
    # the one statement tried and undid itself, then the transaction recorded the event
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
