"""configureProgram, program, upsertTier and tiers over GraphQL, with their coded errors."""

from __future__ import annotations

from typing import Any

from tests.api import GraphQLClient, member_token

CONFIGURE = """mutation($input: ConfigureProgramInput!) {
  configureProgram(input: $input) {
    program { timezone welcomePoints pointsLifetimeDays atRiskDays lapsedDays }
    errors { code field }
  }
}"""
UPSERT_TIER = """mutation($input: UpsertTierInput!) {
  upsertTier(input: $input) {
    tier { key name rank xpThreshold pointsMultiplier retentionXp windowDays benefits }
    errors { code field message }
  }
}"""


async def configure(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    return (await api.admin(CONFIGURE, {"input": fields})).data["configureProgram"]


async def upsert_tier(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    return (await api.admin(UPSERT_TIER, {"input": fields})).data["upsertTier"]


async def test_program_defaults_and_partial_update(api: GraphQLClient) -> None:
    before = (await api.admin("{ program { welcomePoints pointsLifetimeDays timezone } }")).data
    assert before["program"] == {"welcomePoints": 0, "pointsLifetimeDays": 365, "timezone": "UTC"}
    payload = await configure(api, timezone="Asia/Tokyo", welcomePoints=100)
    assert payload["errors"] == []
    assert payload["program"]["timezone"] == "Asia/Tokyo"
    assert payload["program"]["welcomePoints"] == 100
    assert payload["program"]["pointsLifetimeDays"] == 365  # untouched
    never_expire = await configure(api, pointsLifetimeDays=None)
    assert never_expire["program"]["pointsLifetimeDays"] is None


async def test_program_rejects_bad_settings(api: GraphQLClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timezone": "Not/AZone"}, "timezone"),
        ({"welcomePoints": -1}, "welcomePoints"),
        ({"welcomePoints": None}, "welcomePoints"),
        ({"pointsLifetimeDays": 0}, "pointsLifetimeDays"),
        ({"atRiskDays": 90, "lapsedDays": 60}, "atRiskDays"),
    ]
    for fields, field in cases:
        payload = await configure(api, **fields)
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID_INPUT", field)]
    after = (await api.admin("{ program { timezone welcomePoints } }")).data["program"]
    assert after == {"timezone": "UTC", "welcomePoints": 0}


async def test_program_is_admin_only(api: GraphQLClient) -> None:
    token = member_token("someone")
    assert (await api.post("{ program { timezone } }", token=token)).error_codes == ["FORBIDDEN"]
    result = await api.post(CONFIGURE, {"input": {"welcomePoints": 5}}, token)
    assert result.error_codes == ["FORBIDDEN"]


async def test_upsert_and_list_tiers(api: GraphQLClient) -> None:
    gold = await upsert_tier(
        api,
        key="gold",
        name="Gold",
        rank=2,
        xpThreshold=1000,
        pointsMultiplier=1.5,
        retentionXp=500,
        benefits=["free shipping"],
    )
    assert gold["errors"] == []
    assert gold["tier"]["pointsMultiplier"] == 1.5
    await upsert_tier(api, key="member", name="Member", rank=0, xpThreshold=0)
    await upsert_tier(api, key="silver", name="Silver", rank=1, xpThreshold=300)
    renamed = await upsert_tier(api, key="gold", name="Gold+", rank=2, xpThreshold=1200)
    assert renamed["tier"]["name"] == "Gold+"
    tiers = (await api.post("{ tiers { key rank xpThreshold } }")).data["tiers"]  # public
    assert [t["key"] for t in tiers] == ["member", "silver", "gold"]
    assert tiers[2]["xpThreshold"] == 1200


async def test_tier_validation(api: GraphQLClient) -> None:
    await upsert_tier(api, key="base", name="Base", rank=0, xpThreshold=0)
    cases = [
        ({"key": "x", "name": "X", "rank": 1, "xpThreshold": -5}, "INVALID_INPUT", "xpThreshold"),
        ({"key": "y", "name": "Y", "rank": 0, "xpThreshold": 10}, "CONFLICT", "rank"),
        ({"key": "Bad Key", "name": "Z", "rank": 3, "xpThreshold": 10}, "INVALID_INPUT", "key"),
        (
            {"key": "z", "name": "Z", "rank": 3, "xpThreshold": 1, "pointsMultiplier": 0},
            "INVALID_INPUT",
            "pointsMultiplier",
        ),
        (
            {"key": "w", "name": "W", "rank": 4, "xpThreshold": 1, "windowDays": 0},
            "INVALID_INPUT",
            "windowDays",
        ),
    ]
    for fields, code, field in cases:
        payload = await upsert_tier(api, **fields)
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], fields
        assert payload["tier"] is None
    tiers = (await api.post("{ tiers { key } }")).data["tiers"]
    assert tiers == [{"key": "base"}]
