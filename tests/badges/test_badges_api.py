"""Badges over GraphQL: curation, the public list, secret badges, awards, authorization."""

from __future__ import annotations

from typing import Any

from tests.api import GraphQLClient, member_token

UPSERT_BADGE = """mutation($input: UpsertBadgeInput!) {
  upsertBadge(input: $input) {
    badge { key name description imageUrl levels secret }
    errors { code field message }
  }
}"""
AWARD_BADGE = """mutation($input: AwardBadgeInput!) {
  awardBadge(input: $input) {
    awarded
    badge { badge { key } level }
    member { externalId }
    errors { code field }
  }
}"""
MY_BADGES = "{ me { badges { badge { key name secret } level awardedAt firstAwardedAt } } }"


async def upsert_badge(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    return (await api.admin(UPSERT_BADGE, {"input": fields})).data["upsertBadge"]


async def award_badge(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    return (await api.admin(AWARD_BADGE, {"input": fields})).data["awardBadge"]


async def public_badge_keys(api: GraphQLClient) -> list[str]:
    return [b["key"] for b in (await api.post("{ badges { key } }")).data["badges"]]


async def test_upsert_and_public_list_hides_secret_badges(api: GraphQLClient) -> None:
    created = await upsert_badge(
        api,
        key="coffee-lover",
        name="Coffee Lover",
        description="Ten coffees",
        imageUrl="https://cdn.example.com/coffee.png",
        levels=3,
    )
    assert created == {
        "badge": {
            "key": "coffee-lover",
            "name": "Coffee Lover",
            "description": "Ten coffees",
            "imageUrl": "https://cdn.example.com/coffee.png",
            "levels": 3,
            "secret": False,
        },
        "errors": [],
    }
    await upsert_badge(api, key="night-owl", name="Night Owl", secret=True)
    assert await public_badge_keys(api) == ["coffee-lover"]  # no token needed
    everything = await api.admin("{ badges(includeSecret: true) { key secret } }")
    assert everything.data["badges"] == [
        {"key": "coffee-lover", "secret": False},
        {"key": "night-owl", "secret": True},
    ]
    peek = await api.as_member("ana", "{ badges(includeSecret: true) { key } }")
    assert peek.error_codes == ["FORBIDDEN"]
    renamed = await upsert_badge(api, key="coffee-lover", name="Coffee Addict", levels=3)
    assert renamed["badge"]["name"] == "Coffee Addict"
    assert renamed["badge"]["description"] is None


async def test_secret_badge_is_seen_by_its_holder_only_once_earned(api: GraphQLClient) -> None:
    await api.register("ana")
    await upsert_badge(api, key="night-owl", name="Night Owl", secret=True)
    assert (await api.as_member("ana", MY_BADGES)).data["me"]["badges"] == []
    awarded = await award_badge(api, externalId="ana", badgeKey="night-owl")
    assert awarded == {
        "awarded": True,
        "badge": {"badge": {"key": "night-owl"}, "level": 1},
        "member": {"externalId": "ana"},
        "errors": [],
    }
    mine = (await api.as_member("ana", MY_BADGES)).data["me"]["badges"]
    assert [(b["badge"], b["level"]) for b in mine] == [
        ({"key": "night-owl", "name": "Night Owl", "secret": True}, 1)
    ]
    assert await public_badge_keys(api) == []  # still hidden from the public list


async def test_leveled_badge_over_the_api(api: GraphQLClient) -> None:
    await api.register("ben")
    await upsert_badge(api, key="explorer", name="Explorer", levels=3)
    assert (await award_badge(api, externalId="ben", badgeKey="explorer", level=2))["awarded"]
    again = await award_badge(api, externalId="ben", badgeKey="explorer", level=1)
    assert again["awarded"] is False
    assert again["badge"]["level"] == 2  # no downgrade
    gold = await award_badge(api, externalId="ben", badgeKey="explorer", level=3)
    assert (gold["awarded"], gold["badge"]["level"]) == (True, 3)
    mine = (await api.admin('{ member(externalId: "ben") { badges { level } } }')).data
    assert mine["member"]["badges"] == [{"level": 3}]


async def test_bad_badge_input(api: GraphQLClient) -> None:
    await api.register("cleo")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"key": "Bad Key", "name": "X"}, "INVALID_INPUT", "key"),
        ({"key": "x", "name": " "}, "INVALID_INPUT", "name"),
        ({"key": "x", "name": "X", "levels": 0}, "INVALID_INPUT", "levels"),
        ({"key": "x", "name": "X", "levels": 101}, "INVALID_INPUT", "levels"),
        ({"key": "x", "name": "X", "imageUrl": "javascript:alert(1)"}, "INVALID_INPUT", "imageUrl"),
        ({"key": "x", "name": "X", "description": "d" * 2001}, "INVALID_INPUT", "description"),
    ]
    for fields, code, field in cases:
        payload = await upsert_badge(api, **fields)
        assert payload["badge"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], fields
    await upsert_badge(api, key="explorer", name="Explorer", levels=2)
    awards: list[tuple[dict[str, Any], str, str]] = [
        ({"externalId": "nobody", "badgeKey": "explorer"}, "NOT_FOUND", "externalId"),
        ({"externalId": "cleo", "badgeKey": "nope"}, "NOT_FOUND", "badgeKey"),
        ({"externalId": "cleo", "badgeKey": "explorer", "level": 3}, "INVALID_INPUT", "level"),
    ]
    for fields, code, field in awards:
        payload = await award_badge(api, **fields)
        assert payload["awarded"] is False and payload["member"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], fields
    assert await public_badge_keys(api) == ["explorer"]
    assert (await api.as_member("cleo", MY_BADGES)).data["me"]["badges"] == []
    # lowering levels below a held level
    await award_badge(api, externalId="cleo", badgeKey="explorer", level=2)
    lowered = await upsert_badge(api, key="explorer", name="Explorer", levels=1)
    assert [(e["code"], e["field"]) for e in lowered["errors"]] == [("CONFLICT", "levels")]


async def test_members_cannot_curate_or_award_badges(api: GraphQLClient) -> None:
    await api.register("dan")
    await upsert_badge(api, key="explorer", name="Explorer")
    token = member_token("dan")
    refused = await api.post(
        UPSERT_BADGE, {"input": {"key": "explorer", "name": "Hacked", "levels": 5}}, token
    )
    assert refused.error_codes == ["FORBIDDEN"]
    self_award = await api.post(
        AWARD_BADGE, {"input": {"externalId": "dan", "badgeKey": "explorer"}}, token
    )
    assert self_award.error_codes == ["FORBIDDEN"]
    anonymous = await api.post(UPSERT_BADGE, {"input": {"key": "explorer", "name": "Anon"}})
    assert anonymous.error_codes == ["UNAUTHENTICATED"]
    badges = (await api.post("{ badges { name levels } }")).data["badges"]
    assert badges == [{"name": "Explorer", "levels": 1}]  # nothing changed
    assert (await api.as_member("dan", MY_BADGES)).data["me"]["badges"] == []
