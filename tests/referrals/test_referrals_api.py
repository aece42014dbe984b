"""Referrals end to end over GraphQL: registerMember(referralCode), recordEvent, and
Member.referrals."""

from __future__ import annotations

from typing import Any

from ledger import service as ledger
from members.service import get_member_by_external_id
from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.quests.helpers import record

CONFIGURE = """mutation($input: ConfigureProgramInput!) {
  configureProgram(input: $input) { errors { code field } }
}"""
MY_REFERRALS = "{ me { referralCode referrals { referred qualified rewarded } } }"


async def referral_code(api: GraphQLClient, external_id: str) -> str:
    me = (await api.as_member(external_id, MY_REFERRALS)).data["me"]
    return me["referralCode"]


async def available(runtime: Runtime, external_id: str) -> int:
    async with runtime.sessionmaker() as session:
        member = await get_member_by_external_id(session, external_id)
        assert member is not None
        return (await ledger.balances(session, member.id)).available


def referral_awards(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in outcome["awarded"] if a["key"] == "referral"]


async def test_referral_through_record_event(api: GraphQLClient, runtime: Runtime) -> None:
    settings = {
        "referrerReward": 100,
        "refereeReward": 50,
        "referralQualifyingEvent": "purchase",
        "maxReferralRewardsPerMonth": 1,
    }
    assert (await api.admin(CONFIGURE, {"input": settings})).data["configureProgram"] == {
        "errors": []
    }
    await api.register("alice")
    code = await referral_code(api, "alice")
    await api.register("bob", referralCode=code.lower())  # codes are case-insensitive
    await api.register("carol", referralCode=code)
    await api.register("dave", referralCode=code)

    assert referral_awards(await record(api, "bob", "check_in", "bob-0")) == []
    first = await record(api, "bob", "purchase", "bob-1")
    assert first["errors"] == []
    assert referral_awards(first) == [
        {"kind": "POINTS", "currency": "points", "amount": 50, "key": "referral"}
    ]
    replay = await record(api, "bob", "purchase", "bob-1")  # the same event again
    assert replay["event"]["id"] == first["event"]["id"]
    assert referral_awards(await record(api, "bob", "purchase", "bob-2")) == []
    assert [await available(runtime, m) for m in ("alice", "bob")] == [100, 50]

    # the cap (1 a month) stops alice's rewards, never carol's
    assert len(referral_awards(await record(api, "carol", "purchase", "carol-1"))) == 1
    assert [await available(runtime, m) for m in ("alice", "carol")] == [100, 50]

    mine = (await api.as_member("alice", MY_REFERRALS)).data["me"]["referrals"]
    assert mine == {"referred": 3, "qualified": 2, "rewarded": 1}
    theirs = (await api.as_member("bob", MY_REFERRALS)).data["me"]["referrals"]
    assert theirs == {"referred": 0, "qualified": 0, "rewarded": 0}
    peek = await api.as_member("bob", '{ member(externalId: "alice") { referrals { referred } } }')
    assert peek.error_codes == ["FORBIDDEN"]


async def test_referrals_of_many_members_in_one_page(api: GraphQLClient) -> None:
    await api.register("alice")
    code = await referral_code(api, "alice")
    for name in ("bob", "carol"):
        await api.register(name, referralCode=code)
    page = await api.admin("{ members(first: 10) { nodes { externalId referrals { referred } } } }")
    assert [
        (n["externalId"], n["referrals"]["referred"]) for n in page.data["members"]["nodes"]
    ] == [
        ("alice", 2),
        ("bob", 0),
        ("carol", 0),
    ]
