"""Titles over GraphQL: upsertTitle, grantTitle, revokeTitle, equipTitle, Member.titles and
activeTitle, with their coded errors and authorization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from badges.models import MemberTitle
from server.runtime import Runtime
from tests.api import GraphQLClient, member_token

UPSERT_TITLE = """mutation($input: UpsertTitleInput!) {
  upsertTitle(input: $input) { title { key name description maxHolders } errors { code field } }
}"""
GRANT = """mutation($input: GrantTitleInput!) {
  grantTitle(input: $input) { granted member { externalId } errors { code field } }
}"""
REVOKE = """mutation($input: RevokeTitleInput!) {
  revokeTitle(input: $input) { member { externalId } errors { code field } }
}"""
EQUIP = """mutation($input: EquipTitleInput!) {
  equipTitle(input: $input) { member { activeTitle { key name } } errors { code field } }
}"""
MY_TITLES = "{ me { titles { title { key } grantedAt expiresAt active } activeTitle { key } } }"
CXO = "chief-experience-officer"


async def upsert_title(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    return (await api.admin(UPSERT_TITLE, {"input": fields})).data["upsertTitle"]


async def grant(api: GraphQLClient, external_id: str, key: str, **fields: Any) -> dict[str, Any]:
    variables = {"input": {"externalId": external_id, "titleKey": key, **fields}}
    return (await api.admin(GRANT, variables)).data["grantTitle"]


async def revoke(api: GraphQLClient, external_id: str, key: str) -> dict[str, Any]:
    variables = {"input": {"externalId": external_id, "titleKey": key}}
    return (await api.admin(REVOKE, variables)).data["revokeTitle"]


async def equip(api: GraphQLClient, external_id: str, key: str | None) -> dict[str, Any]:
    result = await api.as_member(external_id, EQUIP, {"input": {"titleKey": key}})
    return result.data["equipTitle"]


async def my_titles(api: GraphQLClient, external_id: str) -> dict[str, Any]:
    return (await api.as_member(external_id, MY_TITLES)).data["me"]


def codes(payload: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def make_titles(api: GraphQLClient) -> None:
    created = await upsert_title(
        api, key=CXO, name="Chief Experience Officer", description="The one", maxHolders=1
    )
    assert created == {
        "title": {
            "key": CXO,
            "name": "Chief Experience Officer",
            "description": "The one",
            "maxHolders": 1,
        },
        "errors": [],
    }
    await upsert_title(api, key="regular", name="Regular")


async def test_grant_equip_switch_and_take_off(api: GraphQLClient) -> None:
    await make_titles(api)
    await api.register("ana")
    assert await grant(api, "ana", CXO) == {
        "granted": True,
        "member": {"externalId": "ana"},
        "errors": [],
    }
    assert (await grant(api, "ana", CXO))["granted"] is False  # already held
    await grant(api, "ana", "regular")
    assert (await my_titles(api, "ana"))["activeTitle"] is None  # granting does not equip
    equipped = await equip(api, "ana", CXO)
    assert equipped == {
        "member": {"activeTitle": {"key": CXO, "name": "Chief Experience Officer"}},
        "errors": [],
    }
    assert (await equip(api, "ana", "regular"))["member"]["activeTitle"]["key"] == "regular"
    mine = await my_titles(api, "ana")
    assert sorted((t["title"]["key"], t["active"]) for t in mine["titles"]) == [
        (CXO, False),
        ("regular", True),
    ]
    assert (await equip(api, "ana", None))["member"]["activeTitle"] is None
    titles = (await api.admin("{ titles { key maxHolders } }")).data["titles"]
    assert titles == [{"key": CXO, "maxHolders": 1}, {"key": "regular", "maxHolders": None}]


async def test_equip_refusals(api: GraphQLClient) -> None:
    await make_titles(api)
    await api.register("ben")
    await api.register("cleo")
    await grant(api, "cleo", CXO)
    assert codes(await equip(api, "ben", CXO)) == [("NOT_ELIGIBLE", "titleKey")]  # not held
    assert codes(await equip(api, "ben", "no-such-title")) == [("NOT_FOUND", "titleKey")]
    assert (await my_titles(api, "ben"))["activeTitle"] is None
    assert (await my_titles(api, "cleo"))["activeTitle"] is None
    admin_equip = await api.admin(EQUIP, {"input": {"titleKey": CXO}})
    assert admin_equip.error_codes == ["FORBIDDEN"]  # equipTitle is the member's own act
    unregistered = await api.as_member("ghost", EQUIP, {"input": {"titleKey": CXO}})
    assert codes(unregistered.data["equipTitle"]) == [("NOT_FOUND", "externalId")]


async def test_revoke_unequips_and_frees_the_seat(api: GraphQLClient) -> None:
    await make_titles(api)
    await api.register("dan")
    await api.register("eve")
    await grant(api, "dan", CXO)
    await equip(api, "dan", CXO)
    assert codes(await grant(api, "eve", CXO)) == [("LIMIT_REACHED", "titleKey")]
    assert await revoke(api, "dan", CXO) == {"member": {"externalId": "dan"}, "errors": []}
    assert await my_titles(api, "dan") == {"titles": [], "activeTitle": None}
    assert codes(await revoke(api, "dan", CXO)) == [("NOT_FOUND", "titleKey")]
    assert codes(await revoke(api, "dan", "nope")) == [("NOT_FOUND", "titleKey")]
    assert (await grant(api, "eve", CXO))["granted"] is True
    # granted again later, the title comes back unequipped
    await revoke(api, "eve", CXO)
    await grant(api, "dan", CXO)
    assert (await my_titles(api, "dan"))["activeTitle"] is None


async def test_expired_title_is_neither_listed_nor_active(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await make_titles(api)
    await api.register("fay")
    expires = datetime.now(UTC) + timedelta(hours=1)
    await grant(api, "fay", CXO, expiresAt=expires.isoformat())
    await equip(api, "fay", CXO)
    mine = await my_titles(api, "fay")
    assert mine["activeTitle"] == {"key": CXO}
    assert datetime.fromisoformat(mine["titles"][0]["expiresAt"]) == expires
    async with runtime.transaction() as session:  # time passes: the holding expires
        await session.execute(
            update(MemberTitle).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await my_titles(api, "fay") == {"titles": [], "activeTitle": None}
    assert codes(await equip(api, "fay", CXO)) == [("NOT_ELIGIBLE", "titleKey")]
    await api.register("gus")
    assert (await grant(api, "gus", CXO))["granted"] is True  # the seat was free again


async def test_bad_title_input(api: GraphQLClient) -> None:
    await make_titles(api)
    await api.register("hal")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"key": "Bad Key", "name": "X"}, "INVALID_INPUT", "key"),
        ({"key": "x", "name": ""}, "INVALID_INPUT", "name"),
        ({"key": "x", "name": "X", "maxHolders": 0}, "INVALID_INPUT", "maxHolders"),
    ]
    for fields, code, field in cases:
        payload = await upsert_title(api, **fields)
        assert payload["title"] is None and codes(payload) == [(code, field)], fields
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert codes(await grant(api, "hal", CXO, expiresAt=past)) == [("INVALID_INPUT", "expiresAt")]
    assert codes(await grant(api, "nobody", CXO)) == [("NOT_FOUND", "externalId")]
    assert codes(await grant(api, "hal", "nope")) == [("NOT_FOUND", "titleKey")]
    await grant(api, "hal", CXO)
    await grant(api, "hal", "regular")
    await api.register("ivy")
    await grant(api, "ivy", "regular")
    lowered = await upsert_title(api, key="regular", name="Regular", maxHolders=1)
    assert codes(lowered) == [("CONFLICT", "maxHolders")]
    assert len((await my_titles(api, "hal"))["titles"]) == 2


async def test_members_cannot_grant_revoke_or_curate_titles(api: GraphQLClient) -> None:
    await make_titles(api)
    await api.register("jo")
    await api.register("kim")
    await grant(api, "kim", CXO)
    token = member_token("jo")
    own = {"input": {"externalId": "jo", "titleKey": CXO}}
    assert (await api.post(GRANT, own, token)).error_codes == ["FORBIDDEN"]
    theirs = {"input": {"externalId": "kim", "titleKey": CXO}}
    assert (await api.post(REVOKE, theirs, token)).error_codes == ["FORBIDDEN"]
    curate = {"input": {"key": CXO, "name": "Mine", "maxHolders": 5}}
    assert (await api.post(UPSERT_TITLE, curate, token)).error_codes == ["FORBIDDEN"]
    assert (await api.post("{ titles { key } }", token=token)).error_codes == ["FORBIDDEN"]
    assert (await api.post(GRANT, own)).error_codes == ["UNAUTHENTICATED"]
    # nothing changed
    assert (await my_titles(api, "jo"))["titles"] == []
    assert [t["title"]["key"] for t in (await my_titles(api, "kim"))["titles"]] == [CXO]
    titles = (await api.admin("{ titles { key name maxHolders } }")).data["titles"]
    assert titles[0] == {"key": CXO, "name": "Chief Experience Officer", "maxHolders": 1}
