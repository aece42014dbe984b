"""Members over GraphQL: registration, me, member, members, and who may see what."""

from __future__ import annotations

from typing import Any

from tests.api import GraphQLClient, member_token

REGISTER = """mutation($input: RegisterMemberInput!) {
  registerMember(input: $input) {
    member { id externalId displayName birthday timezone referralCode joinedAt }
    errors { code message field }
  }
}"""
ME = "{ me { externalId displayName referralCode } }"


async def register(api: GraphQLClient, token: str | None, **fields: Any) -> dict[str, Any]:
    result = await api.post(REGISTER, {"input": fields}, token)
    return result.data["registerMember"]


async def test_member_registers_itself_and_reads_me(api: GraphQLClient) -> None:
    token = member_token("alice")
    payload = await register(
        api, token, externalId="alice", displayName="Alice", timezone="Europe/Paris"
    )
    assert payload["errors"] == []
    assert payload["member"]["externalId"] == "alice"
    assert len(payload["member"]["referralCode"]) == 8

    me = (await api.post(ME, token=token)).data["me"]
    assert me == {
        "externalId": "alice",
        "displayName": "Alice",
        "referralCode": payload["member"]["referralCode"],
    }


async def test_registration_is_idempotent_by_external_id(api: GraphQLClient) -> None:
    first = await api.register("bob", displayName="Bob")
    second = await api.register("bob", displayName="Robert")
    assert first["id"] == second["id"]
    listed = (await api.admin("{ members { edges { node { externalId displayName } } } }")).data
    assert listed["members"]["edges"] == [{"node": {"externalId": "bob", "displayName": "Bob"}}]


async def test_member_cannot_register_or_read_someone_else(api: GraphQLClient) -> None:
    await api.register("carol")
    mallory = member_token("mallory")
    result = await api.post(REGISTER, {"input": {"externalId": "carol2"}}, mallory)
    assert result.error_codes == ["FORBIDDEN"]
    result = await api.post('{ member(externalId: "carol") { externalId } }', token=mallory)
    assert result.error_codes == ["FORBIDDEN"]
    assert result.body["data"]["member"] is None
    result = await api.post("{ members { edges { node { externalId } } } }", token=mallory)
    assert result.error_codes == ["FORBIDDEN"]
    # and nothing was created by the refused call
    listed = (await api.admin("{ members { edges { node { externalId } } } }")).data
    assert [e["node"]["externalId"] for e in listed["members"]["edges"]] == ["carol"]


async def test_anonymous_caller_is_unauthenticated(api: GraphQLClient) -> None:
    assert (await api.post(ME)).error_codes == ["UNAUTHENTICATED"]
    assert (await api.post(REGISTER, {"input": {"externalId": "x"}})).error_codes == [
        "UNAUTHENTICATED"
    ]


async def test_bad_registration_input_gets_coded_errors(api: GraphQLClient) -> None:
    admin_cases = [
        ({"externalId": "tz", "timezone": "Mars/Olympus"}, "INVALID_INPUT", "timezone"),
        ({"externalId": "bd", "birthday": "2999-01-01"}, "INVALID_INPUT", "birthday"),
        ({"externalId": " padded "}, "INVALID_INPUT", "externalId"),
        ({"externalId": "x" * 256}, "INVALID_INPUT", "externalId"),
        ({"externalId": "ref", "referralCode": "NOPE1234"}, "NOT_FOUND", "referralCode"),
    ]
    for fields, code, field in admin_cases:
        result = await api.admin(REGISTER, {"input": fields})
        errors = result.data["registerMember"]["errors"]
        assert [(e["code"], e["field"]) for e in errors] == [(code, field)], fields
        assert result.data["registerMember"]["member"] is None
    listed = (await api.admin("{ members { edges { node { externalId } } } }")).data
    assert listed["members"]["edges"] == []


async def test_referral_code_links_referee(api: GraphQLClient) -> None:
    referrer = await api.admin(REGISTER, {"input": {"externalId": "ref-a"}})
    code = referrer.data["registerMember"]["member"]["referralCode"]
    referee = await api.admin(
        REGISTER, {"input": {"externalId": "ref-b", "referralCode": code.lower()}}
    )
    assert referee.data["registerMember"]["errors"] == []


async def test_members_pagination_and_filter(api: GraphQLClient) -> None:
    for i in range(5):
        await api.register(f"page-{i}", displayName=f"Player {i}")
    query = """query($after: String, $filter: MemberFilter) {
      members(first: 2, after: $after, filter: $filter) {
        edges { node { externalId } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await api.admin(query, {"after": after})).data["members"]
        seen += [e["node"]["externalId"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"page-{i}" for i in range(5)]

    filtered = (await api.admin(query, {"filter": {"search": "page-3"}})).data["members"]
    assert [e["node"]["externalId"] for e in filtered["edges"]] == ["page-3"]

    too_big = await api.admin("{ members(first: 101) { edges { cursor } } }")
    assert too_big.error_codes == ["INVALID_INPUT"]
    bad_cursor = await api.admin('{ members(after: "garbage!") { edges { cursor } } }')
    assert bad_cursor.error_codes == ["INVALID_INPUT"]


async def test_admin_filters_by_tier_stage_and_inactivity(api: GraphQLClient) -> None:
    from tests.members.test_program_and_tiers_api import upsert_tier

    await upsert_tier(api, key="base", name="Base", rank=0, xpThreshold=0)
    await api.register("quiet")
    query = """query($filter: MemberFilter) {
      members(filter: $filter) { edges { node { externalId lifecycleStage } } } }"""

    async def matching(**criteria: object) -> list[str]:
        result = await api.admin(query, {"filter": criteria})
        return [e["node"]["externalId"] for e in result.data["members"]["edges"]]

    assert await matching(stage="NEW") == ["quiet"]
    assert await matching(stage="AT_RISK") == []
    assert await matching(daysInactive=0) == ["quiet"]
    assert await matching(daysInactive=3) == []
    assert await matching(tier="base") == ["quiet"]  # the base tier needs no xp
    unknown = await api.admin(query, {"filter": {"tier": "platinum"}})
    assert unknown.error_codes == ["NOT_FOUND"]
    bad_stage = await api.admin(query, {"filter": {"stage": "SLEEPY"}})
    assert bad_stage.error_codes == ["INVALID_INPUT"]


async def test_suspend_member(api: GraphQLClient) -> None:
    await api.register("naughty")
    mutation = """mutation($input: SetMemberStatusInput!) {
      setMemberStatus(input: $input) { member { status } errors { code field } } }"""
    done = await api.admin(mutation, {"input": {"externalId": "naughty", "status": "suspended"}})
    assert done.data["setMemberStatus"] == {"member": {"status": "suspended"}, "errors": []}
    bad = await api.admin(mutation, {"input": {"externalId": "naughty", "status": "gone"}})
    assert bad.data["setMemberStatus"]["errors"] == [{"code": "INVALID_INPUT", "field": "status"}]
    missing = await api.admin(mutation, {"input": {"externalId": "nobody", "status": "active"}})
    assert missing.data["setMemberStatus"]["errors"] == [
        {"code": "NOT_FOUND", "field": "externalId"}
    ]
