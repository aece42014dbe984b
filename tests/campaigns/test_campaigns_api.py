"""upsertCampaign and campaigns over GraphQL, and a campaign applied by recordEvent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api import GraphQLClient, member_token
from tests.quests.helpers import record, upsert_quest

UPSERT = """mutation($input: UpsertCampaignInput!) {
  upsertCampaign(input: $input) {
    campaign { key name multiplier startsAt endsAt eventTypes active minTier { key } }
    errors { code field message }
  }
}"""
LIST = "query($at: DateTime) { campaigns(activeAt: $at) { key active } }"
NOW = datetime.now(UTC).replace(microsecond=0)


def window(start: timedelta = timedelta(days=-1), end: timedelta = timedelta(days=1)) -> dict:
    return {"startsAt": (NOW + start).isoformat(), "endsAt": (NOW + end).isoformat()}


async def upsert(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    values = {"key": "weekend", "name": "Double points weekend", "multiplier": 2.0, **window()}
    return (await api.admin(UPSERT, {"input": {**values, **fields}})).data["upsertCampaign"]


async def make_tier(api: GraphQLClient, key: str, rank: int, threshold: int, mult: float) -> None:
    result = await api.admin(
        """mutation($input: UpsertTierInput!) { upsertTier(input: $input) { errors { code } } }""",
        {
            "input": {
                "key": key,
                "name": key.title(),
                "rank": rank,
                "xpThreshold": threshold,
                "pointsMultiplier": mult,
            }
        },
    )
    assert result.data["upsertTier"]["errors"] == []


async def test_upsert_and_list_campaigns(api: GraphQLClient) -> None:
    await make_tier(api, "silver", 1, 500, 1.25)
    created = await upsert(api, eventTypes=["purchase", "purchase"], minTier="silver")
    assert created["errors"] == []
    campaign = created["campaign"]
    assert campaign["multiplier"] == 2.0
    assert campaign["eventTypes"] == ["purchase"]
    assert campaign["active"] is True
    assert campaign["minTier"] == {"key": "silver"}
    assert datetime.fromisoformat(campaign["endsAt"]) == NOW + timedelta(days=1)
    cleared = await upsert(api, multiplier=1.5)  # absent fields go back to their default
    assert (cleared["campaign"]["eventTypes"], cleared["campaign"]["minTier"]) == ([], None)
    await upsert(api, key="next-month", **window(timedelta(days=30), timedelta(days=32)))
    listed = (await api.admin(LIST)).data["campaigns"]
    assert listed == [{"key": "weekend", "active": True}, {"key": "next-month", "active": False}]
    later = (NOW + timedelta(days=31)).isoformat()
    assert (await api.admin(LIST, {"at": later})).data["campaigns"] == [
        {"key": "next-month", "active": False}
    ]


async def test_bad_campaign_input(api: GraphQLClient) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"multiplier": 0}, "INVALID_INPUT", "multiplier"),
        ({"multiplier": 101}, "INVALID_INPUT", "multiplier"),
        ({**window(timedelta(days=1), timedelta(days=1))}, "INVALID_INPUT", "endsAt"),
        ({**window(timedelta(days=1), timedelta(days=-1))}, "INVALID_INPUT", "endsAt"),
        ({"minTier": "platinum"}, "NOT_FOUND", "minTier"),
        ({"key": "Weekend!"}, "INVALID_INPUT", "key"),
        ({"eventTypes": ["a b"]}, "INVALID_INPUT", "eventTypes"),
    ]
    for fields, code, field in cases:
        payload = await upsert(api, **fields)
        assert payload["campaign"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], fields
    assert (await api.admin(LIST)).data["campaigns"] == []
    wrong_type = await api.admin(UPSERT, {"input": {"key": "x", "name": "X", "multiplier": "2"}})
    assert wrong_type.status == 200 and wrong_type.errors  # a GraphQL error, never a 500


async def test_members_cannot_see_or_change_campaigns(api: GraphQLClient) -> None:
    await upsert(api)
    token = member_token("ana")
    values = {"key": "weekend", "name": "Mine", "multiplier": 100.0, **window()}
    assert (await api.post(UPSERT, {"input": values}, token)).error_codes == ["FORBIDDEN"]
    assert (await api.post(UPSERT, {"input": values})).error_codes == ["UNAUTHENTICATED"]
    assert (await api.post(LIST, token=token)).error_codes == ["FORBIDDEN"]
    query = "{ campaigns { name multiplier } }"
    unchanged = (await api.admin(query)).data["campaigns"]
    assert unchanged == [{"name": "Double points weekend", "multiplier": 2.0}]


async def test_record_event_applies_tier_and_campaigns_once_rounded(api: GraphQLClient) -> None:
    await make_tier(api, "member", 0, 0, 1.25)
    await api.register("ana")
    quest = await upsert_quest(
        api,
        key="every-coffee",
        cadence="DAILY",
        eventType="purchase",
        target=1,
        rewards=[{"kind": "POINTS", "amount": 15}],
    )
    assert quest["errors"] == []
    await upsert(api)  # ×2 for everything
    await upsert(
        api, key="coffee-week", name="Coffee week", multiplier=1.5, eventTypes=["purchase"]
    )
    await upsert(api, key="reviews", name="Reviews", multiplier=3.0, eventTypes=["review"])
    outcome = await record(api, "ana", "purchase", "ana-1")
    assert outcome["errors"] == []
    points = [a for a in outcome["awarded"] if a["kind"] == "POINTS"]
    assert [a["amount"] for a in points] == [56]  # floor(15 × 1.25 × 2 × 1.5) = floor(56.25)
