"""An event that completes quests, in one statement (``quests.event_at_once``): the rewards
posted exactly as the transaction posts them (same keys, memos, references, input hashes,
lots), and what the statement leaves to the transaction (badges, tier upgrades, credits a
webhook wants, points without a cached multiplier) going there with nothing written twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from ledger._calls import input_hash
from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.quests.helpers import balance, record, upsert_quest
from tests.quests.test_event_at_once import control, stored
from tests.support import record_round_trips

TWO_REWARDS = [{"kind": "POINTS", "amount": 10}, {"kind": "XP", "amount": 5}]


async def warm_up(api: GraphQLClient) -> None:
    """Fill this process's caches (program, quests, campaigns) as traffic would: one event
    completing a points quest, through the transaction."""
    await api.register("warmer")
    await upsert_quest(api, key="warm-up", cadence="ONCE", eventType="warm", target=1)
    await record(api, "warmer", "warm", "w1")


async def reward_transactions(runtime: Runtime, external_id: str) -> list[dict[str, Any]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            text(
                """SELECT t.member_id, t.kind, t.memo, t.reference, t.idempotency_key,
                          t.input_hash, p.currency, p.amount, l.expires_at
                   FROM transactions t JOIN members m ON m.id = t.member_id
                   JOIN postings p ON p.transaction_id = t.id AND p.amount > 0
                   LEFT JOIN lots l ON l.transaction_id = t.id
                   WHERE m.external_id = :x AND t.kind = 'reward' ORDER BY t.id"""
            ),
            {"x": external_id},
        )
        return [dict(row._mapping) for row in rows]


async def progress_rows(runtime: Runtime, external_id: str) -> list[dict[str, Any]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            text(
                """SELECT qp.id, qp.status, qp.rewards, qp.claimed_at, qp.completed_at,
                          qp.completed_by_event_id
                   FROM quest_progress qp JOIN members m ON m.id = qp.member_id
                   WHERE m.external_id = :x ORDER BY qp.id"""
            ),
            {"x": external_id},
        )
        return [dict(row._mapping) for row in rows]


def assert_posted_as_grant_rewards(posted: dict[str, Any], lifetime_days: int | None) -> None:
    """The transaction is the one ``ledger.service.grant`` writes for a quest reward: its
    input hash is Python's over the same input."""
    fields = {
        "member": posted["member_id"],
        "amount": posted["amount"],
        "currency": posted["currency"],
        "memo": posted["memo"],
        "reference": posted["reference"],
        "metadata": None,
        "expires_at": None,
        "lifetime_days": lifetime_days,
        "kind": "reward",
    }
    assert posted["input_hash"] == input_hash("grant", fields), posted


async def test_a_completing_event_grants_its_rewards_in_one_statement(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await warm_up(api)
    await api.register("finisher")
    await upsert_quest(api, key="two-visits", name="Deux visites ☕", cadence="ONCE",
                       eventType="visit", target=2, rewards=TWO_REWARDS)  # fmt: skip
    await record(api, "finisher", "visit", "v1")
    sent = record_round_trips(monkeypatch)
    done = await record(api, "finisher", "visit", "v2")
    assert len(sent) == 2 and control(sent) == [], sent
    assert done["errors"] == []
    assert [c["quest"]["key"] for c in done["completed"]] == ["two-visits"]
    assert done["completed"][0]["status"] == "CLAIMED"
    assert done["awarded"] == [
        {"kind": "POINTS", "currency": "points", "amount": 10, "key": None},
        {"kind": "XP", "currency": "xp", "amount": 5, "key": None},
    ]
    assert (await balance(api, "finisher"), await balance(api, "finisher", "xp")) == (10, 5)

    [row] = await progress_rows(runtime, "finisher")
    assert row["status"] == "CLAIMED" and row["claimed_at"] is not None
    assert row["rewards"] == [
        {"kind": "POINTS", "amount": 10, "currency": "points", "key": None},
        {"kind": "XP", "amount": 5, "currency": "xp", "key": None},
    ]
    assert row["completed_by_event_id"] == int(done["event"]["id"])
    points, xp = await reward_transactions(runtime, "finisher")
    pid = row["id"]
    assert (points["idempotency_key"], xp["idempotency_key"]) == (
        f"quest:{pid}:0",
        f"quest:{pid}:1",
    )
    assert points["reference"] == xp["reference"] == f"quest:{pid}"
    assert points["memo"] == xp["memo"] == "Quest: Deux visites ☕"
    assert_posted_as_grant_rewards(points, 365)
    assert_posted_as_grant_rewards(xp, None)
    assert xp["expires_at"] is None
    expected = datetime.now(UTC) + timedelta(days=365)
    assert abs(points["expires_at"] - expected) < timedelta(minutes=5)

    _, (_, result) = await stored(runtime, "finisher")
    assert result["completed"] == [pid] and result["progressed"] == [pid]
    assert [(a["kind"], a["amount"]) for a in result["awarded"]] == [("POINTS", 10), ("XP", 5)]
    assert await record(api, "finisher", "visit", "v2") == done  # a replay: the same answer
    assert len(await reward_transactions(runtime, "finisher")) == 2


async def test_the_transaction_posts_the_same_rewards(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same completion with the campaigns' cache empty goes through the transaction:
    the same answer and the same rows as the one statement's."""
    from campaigns.service import _rules_cache

    await warm_up(api)
    await upsert_quest(api, key="two-hops", cadence="DAILY", eventType="hop", target=2,
                       rewards=TWO_REWARDS)  # fmt: skip
    answers = {}
    for name in ("quick", "careful"):
        await api.register(name)
        await record(api, name, "hop", "h1")
        if name == "careful":
            _rules_cache.clear()
        sent = record_round_trips(monkeypatch)
        answers[name] = await record(api, name, "hop", "h2")
        assert control(sent) == ([] if name == "quick" else ["BEGIN", "COMMIT"]), sent
        monkeypatch.undo()

    def same(answer: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in answer.items() if k != "event"}

    assert same(answers["quick"]) == same(answers["careful"])
    posted = {n: await reward_transactions(runtime, n) for n in ("quick", "careful")}
    for rows in posted.values():
        for row, lifetime in zip(rows, (365, None), strict=True):
            assert_posted_as_grant_rewards(row, lifetime)

    def shape(row: dict[str, Any]) -> tuple[Any, ...]:
        pid = row["reference"].removeprefix("quest:")
        key = row["idempotency_key"].replace(pid, "P")
        return (
            row["kind"],
            row["memo"],
            key,
            row["currency"],
            row["amount"],
            row["expires_at"] is None,
        )

    assert [shape(r) for r in posted["quick"]] == [shape(r) for r in posted["careful"]]
    progress = {n: await progress_rows(runtime, n) for n in ("quick", "careful")}
    assert [(r["status"], r["rewards"]) for r in progress["quick"]] == [
        (r["status"], r["rewards"]) for r in progress["careful"]
    ]


async def test_multipliers_apply_in_one_statement(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Silver member (×1.25) during a ×2 campaign: 10 points become 25, floor of the exact
    product, in one statement (the campaign and the tiers come from the caches)."""
    from members.tiers import list_tiers
    from tests.campaigns.test_campaigns_api import upsert as upsert_campaign
    from tests.members.helpers import earn_xp, make_ladder

    await make_ladder(runtime)
    silver = await api.register("silvery")
    await earn_xp(runtime, int(silver["id"]), 600, "xp-1", datetime.now(UTC))
    assert (await upsert_campaign(api, eventTypes=["shop"]))["errors"] == []
    await upsert_quest(api, key="one-shop", cadence="ONCE", eventType="shop", target=1)
    await upsert_quest(api, key="two-shop", cadence="ONCE", eventType="shop", target=1)
    await warm_up(api)  # the caches the upserts cleared filled again
    async with runtime.sessionmaker() as session:
        await list_tiers(session)  # the tiers cached, as any `me` request leaves them
    sent = record_round_trips(monkeypatch)
    done = await record(api, "silvery", "shop", "s1")
    assert len(sent) == 2 and control(sent) == [], sent
    assert [a["amount"] for a in done["awarded"]] == [25, 25]
    assert await balance(api, "silvery") == 50


async def test_what_the_statement_leaves_to_the_transaction(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A badge to give, and an xp credit that crosses a tier's threshold: the statement undoes
    itself and the transaction records the event (badge given, tier upgraded), once."""
    from tests.members.helpers import make_ladder

    await make_ladder(runtime)
    await api.admin(
        """mutation { upsertBadge(input: {key: "regular", name: "Regular", levels: 3}) {
             errors { code } } }"""
    )
    await upsert_quest(api, key="badge-walk", cadence="ONCE", eventType="walk", target=1,
                       rewards=[{"kind": "BADGE", "key": "regular", "amount": 1}])  # fmt: skip
    await upsert_quest(api, key="big-run", cadence="ONCE", eventType="run", target=1,
                       rewards=[{"kind": "XP", "amount": 600}])  # fmt: skip
    await warm_up(api)
    await api.register("walker")
    for event_type, kind in (("walk", "BADGE"), ("run", "XP")):
        sent = record_round_trips(monkeypatch)
        done = await record(api, "walker", event_type, f"{event_type}-1")
        assert "quests_completion_needs_transaction" in sent[1], sent
        assert control(sent) == ["BEGIN", "COMMIT"], sent
        assert [a["kind"] for a in done["awarded"]] == [kind]
        monkeypatch.undo()
    me = "{ me { tier { key } badges { badge { key } level } } }"
    assert (await api.as_member("walker", me)).data["me"] == {
        "tier": {"key": "silver"},
        "badges": [{"badge": {"key": "regular"}, "level": 1}],
    }
    assert [r["amount"] for r in await reward_transactions(runtime, "walker")] == [600]


async def test_a_webhook_on_points_earned_gets_the_credits_in_their_transaction(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.webhooks.helpers import outbox, subscribe

    await subscribe(runtime, "http://127.0.0.1:9/hooks", ["points.earned"])
    hooked = int((await api.register("hooked"))["id"])
    await upsert_quest(api, key="two-jumps", cadence="ONCE", eventType="jump", target=2)
    await warm_up(api)
    sent = record_round_trips(monkeypatch)
    await record(api, "hooked", "jump", "j1")  # completes nothing: still one statement
    assert len(sent) == 2 and control(sent) == [], sent
    sent.clear()
    done = await record(api, "hooked", "jump", "j2")
    assert control(sent) == ["BEGIN", "COMMIT"], sent
    assert [a["amount"] for a in done["awarded"]] == [10]
    events = [e["type"] for e in await outbox(runtime) if e["member_id"] == hooked]
    assert events == ["points.earned"]


async def test_a_quest_to_claim_completes_in_one_statement_and_is_claimed_once(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.register("claimer")
    await upsert_quest(api, key="to-claim", cadence="ONCE", eventType="read", target=1,
                       autoClaim=False, rewards=TWO_REWARDS)  # fmt: skip
    await warm_up(api)
    sent = record_round_trips(monkeypatch)
    done = await record(api, "claimer", "read", "r1")
    assert len(sent) == 2 and control(sent) == [], sent
    assert done["completed"][0]["status"] == "COMPLETED" and done["awarded"] == []
    [row] = await progress_rows(runtime, "claimer")
    assert row["claimed_at"] is None and row["rewards"][0]["amount"] == 10
    claim = """mutation { claimQuestReward(input: {questKey: "to-claim"}) {
      awarded { kind amount } errors { code } } }"""
    claimed = (await api.as_member("claimer", claim)).data["claimQuestReward"]
    assert claimed == {"awarded": [{"kind": "POINTS", "amount": 10}, {"kind": "XP", "amount": 5}],
                       "errors": []}  # fmt: skip
    again = (await api.as_member("claimer", claim)).data["claimQuestReward"]
    assert [e["code"] for e in again["errors"]] == ["ALREADY_DONE"]
    assert await balance(api, "claimer") == 10


async def test_concurrent_events_complete_a_quest_once(
    api: GraphQLClient, runtime: Runtime
) -> None:
    """Twelve events with distinct keys at once, on a quest of three: one completion, its
    rewards once, whichever path each event took."""
    await api.register("racer")
    await upsert_quest(api, key="three-laps", cadence="DAILY", eventType="lap", target=3,
                       rewards=TWO_REWARDS)  # fmt: skip
    await warm_up(api)
    answers = await asyncio.gather(*(record(api, "racer", "lap", f"l{i}") for i in range(12)))
    assert all(a["errors"] == [] for a in answers)
    assert sum(len(a["completed"]) for a in answers) == 1
    assert sum(len(a["awarded"]) for a in answers) == 2
    assert (await balance(api, "racer"), await balance(api, "racer", "xp")) == (10, 5)
    assert len(await reward_transactions(runtime, "racer")) == 2
