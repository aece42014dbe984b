"""Quest rewards of every kind: badges (levels), titles (a full title is skipped, the event
still counts), and points through tier and campaign multipliers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.api import GraphQLClient
from tests.quests.helpers import record, upsert_quest


async def test_badge_and_title_rewards(api: GraphQLClient) -> None:
    await api.admin(
        """mutation { upsertBadge(input: {key: "reviewer", name: "Reviewer", levels: 3}) {
             errors { code } } }"""
    )
    await api.admin(
        """mutation { upsertTitle(input: {key: "chief-experience-officer",
             name: "Chief Experience Officer", maxHolders: 1}) { errors { code } } }"""
    )
    await upsert_quest(
        api,
        key="first-review",
        cadence="ONCE",
        eventType="review",
        target=1,
        rewards=[
            {"kind": "BADGE", "key": "reviewer", "amount": 2},
            {"kind": "TITLE", "key": "chief-experience-officer"},
            {"kind": "POINTS", "amount": 5},
        ],
    )
    await api.register("first")
    await api.register("second")
    won = await record(api, "first", "review", "r1")
    assert {(a["kind"], a["key"], a["amount"]) for a in won["awarded"]} == {
        ("BADGE", "reviewer", 2),
        ("TITLE", "chief-experience-officer", None),
        ("POINTS", None, 5),
    }
    late = await record(api, "second", "review", "r1")
    assert late["errors"] == []  # the single seat is taken: no title, the rest still granted
    assert {a["kind"] for a in late["awarded"]} == {"BADGE", "POINTS"}
    first = await api.as_member(
        "first", "{ me { badges { badge { key } level } titles { title { key } } } }"
    )
    assert first.data["me"]["badges"] == [{"badge": {"key": "reviewer"}, "level": 2}]
    assert first.data["me"]["titles"] == [{"title": {"key": "chief-experience-officer"}}]


async def test_points_multiplier_stacks_tier_and_campaign(
    api: GraphQLClient, runtime: object
) -> None:
    from tests.members.helpers import make_ladder

    await make_ladder(runtime)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    result = await api.admin(
        """mutation($input: UpsertCampaignInput!) { upsertCampaign(input: $input) {
             errors { code field } } }""",
        {
            "input": {
                "key": "double",
                "name": "Double points",
                "multiplier": 2.0,
                "startsAt": (now - timedelta(hours=1)).isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
                "eventTypes": ["purchase"],
            }
        },
    )
    assert result.data["upsertCampaign"]["errors"] == []
    await upsert_quest(
        api,
        key="buy",
        cadence="ONCE",
        eventType="purchase",
        target=1,
        rewards=[{"kind": "POINTS", "amount": 15}],
    )
    await upsert_quest(
        api,
        key="visit",
        cadence="ONCE",
        eventType="visit",
        target=1,
        rewards=[{"kind": "POINTS", "amount": 15}],
    )
    await api.register("stacker")
    bought = await record(api, "stacker", "purchase", "p1")
    assert [a["amount"] for a in bought["awarded"]] == [30]  # base tier 1.0 × campaign 2
    visited = await record(api, "stacker", "visit", "v1")
    assert [a["amount"] for a in visited["awarded"]] == [15]  # the campaign is for purchases


async def test_an_upgrade_earned_by_a_reward_applies_to_the_next_points_reward(
    api: GraphQLClient, runtime: object
) -> None:
    """Rewards are granted in order: the xp of one quest (or of one reward) that lifts the
    member to silver (1.25) gives the points granted after it silver's multiplier, in the
    same event."""
    from tests.members.helpers import make_ladder

    await make_ladder(runtime)  # type: ignore[arg-type]
    xp_then_points = [{"kind": "XP", "amount": 500}, {"kind": "POINTS", "amount": 100}]
    await upsert_quest(
        api, key="climb", cadence="ONCE", eventType="climb", target=1, rewards=xp_then_points
    )
    await upsert_quest(
        api,
        key="climb-more",
        cadence="ONCE",
        eventType="climb",
        target=1,
        rewards=[{"kind": "POINTS", "amount": 100}],
    )
    await upsert_quest(
        api,
        key="points-first",
        cadence="ONCE",
        eventType="plain",
        target=1,
        rewards=[{"kind": "POINTS", "amount": 100}, {"kind": "XP", "amount": 500}],
    )
    await api.register("climber")
    await api.register("other")
    climbed = await record(api, "climber", "climb", "c1")
    assert [(a["currency"], a["amount"]) for a in climbed["awarded"]] == [
        ("xp", 500),
        ("points", 125),  # already silver: 100 × 1.25
        ("points", 125),  # the second quest of the event too
    ]
    tier = await api.as_member("climber", "{ me { tier { key } } }")
    assert tier.data["me"]["tier"] == {"key": "silver"}
    # points granted before the xp that upgrades keep the base multiplier
    other = await record(api, "other", "plain", "o1")
    assert [(a["currency"], a["amount"]) for a in other["awarded"]] == [
        ("points", 100),
        ("xp", 500),
    ]
