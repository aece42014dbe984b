"""The catalogue and redemptions over GraphQL, as clients call them, with real tokens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from ledger import service as ledger
from redemptions import lottery
from server.runtime import Runtime
from tests.api import GraphQLClient, member_token
from tests.redemptions.helpers import balance, snapshot, stock_of
from tests.support import record_round_trips
from tests.webhooks.helpers import outbox, subscribe

UPSERT = """mutation($input: UpsertCatalogItemInput!) {
  upsertCatalogItem(input: $input) {
    catalogItem { key name kind cost stock perMemberLimit visible codesAvailable minTier { key } }
    codesAdded
    errors { code field message }
  }
}"""
CATALOG = """query($first: Int, $after: String, $all: Boolean = false) {
  catalog(first: $first, after: $after, includeUnavailable: $all) {
    edges { cursor node { key stock } }
    pageInfo { hasNextPage endCursor }
  }
}"""
REDEEM = """mutation($input: RedeemInput!) {
  redeem(input: $input) {
    redemption { id item { key } quantity cost status createdAt }
    errors { code field message }
  }
}"""
REDEEM_BARE = """mutation($input: RedeemInput!) {
  redeem(input: $input) { redemption { id cost status } errors { code } }
}"""
REDEEM_WITH_CODE = """mutation($input: RedeemInput!) {
  redeem(input: $input) { redemption { id code } errors { code } }
}"""
CANCEL = """mutation($input: CancelRedemptionInput!) {
  cancelRedemption(input: $input) {
    redemption { id status cancelReason refundTransactionId }
    errors { code field }
  }
}"""
FULFILL = """mutation($id: ID!) {
  fulfillRedemption(input: {redemptionId: $id}) { redemption { status } errors { code } }
}"""
MY_REDEMPTIONS = """query($first: Int, $after: String) {
  me { redemptions(first: $first, after: $after) {
    edges { node { id item { key } quantity status code } }
    pageInfo { hasNextPage endCursor }
  } }
}"""


async def upsert(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    result = await api.admin(UPSERT, {"input": {"name": fields.get("key", "?"), **fields}})
    payload: dict[str, Any] = result.data["upsertCatalogItem"]
    return payload


async def member_with_points(
    api: GraphQLClient, runtime: Runtime, external_id: str, points: int
) -> int:
    member = await api.register(external_id)
    member_id = int(member["id"])
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, points, idempotency_key=f"seed:{external_id}")
    return member_id


async def redeem(
    api: GraphQLClient, who: str, item: str, key: str, quantity: int = 1, query: str = REDEEM
) -> dict[str, Any]:
    variables = {"input": {"itemKey": item, "quantity": quantity, "idempotencyKey": key}}
    payload: dict[str, Any] = (await api.as_member(who, query, variables)).data["redeem"]
    return payload


async def test_only_admins_curate_the_catalogue(api: GraphQLClient, runtime: Runtime) -> None:
    await api.register("alice")
    variables = {"input": {"key": "mug", "name": "Mug", "cost": 100}}
    as_member = await api.as_member("alice", UPSERT, variables)
    anonymous = await api.post(UPSERT, variables)
    assert as_member.error_codes == ["FORBIDDEN"]
    assert anonymous.error_codes == ["UNAUTHENTICATED"]
    assert (await snapshot(runtime))["stock"] == []

    created = await upsert(api, key="coffee", cost=50, kind="COUPON", codes=["A", "B", "A"])
    assert created["errors"] == []
    assert created["codesAdded"] == 2
    assert created["catalogItem"] == {
        "key": "coffee",
        "name": "coffee",
        "kind": "COUPON",
        "cost": 50,
        "stock": None,
        "perMemberLimit": None,
        "visible": True,
        "codesAvailable": 2,
        "minTier": None,
    }
    refused = await upsert(api, key="bad", cost=0)
    assert refused["catalogItem"] is None
    assert refused["errors"][0]["code"] == "INVALID_INPUT"
    assert refused["errors"][0]["field"] == "cost"
    missing_tier = await upsert(api, key="vip", cost=5, minTier="platinum")
    assert [e["code"] for e in missing_tier["errors"]] == ["NOT_FOUND"]


async def test_catalog_is_public_paginated_and_lists_what_is_available(
    api: GraphQLClient,
) -> None:
    now = datetime.now(UTC)
    for n in range(5):
        await upsert(api, key=f"item-{n}", cost=10 + n, stock=n)
    await upsert(api, key="hidden", cost=10, visible=False)
    await upsert(api, key="ended", cost=10, availableUntil=(now - timedelta(days=1)).isoformat())
    await upsert(api, key="future", cost=10, availableFrom=(now + timedelta(days=1)).isoformat())

    seen: list[str] = []
    after = None
    while True:
        page = (await api.post(CATALOG, {"first": 2, "after": after})).data["catalog"]
        seen += [edge["node"]["key"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"item-{n}" for n in range(5)]  # sold-out item-0 listed with stock 0

    everything = await api.admin(CATALOG, {"first": 100, "all": True})
    assert len(everything.data["catalog"]["edges"]) == 8
    not_admin = await api.as_member("someone", CATALOG, {"all": True})
    assert not_admin.error_codes == ["FORBIDDEN"]
    too_many = await api.post(CATALOG, {"first": 101})
    assert too_many.error_codes == ["INVALID_INPUT"]
    bad_cursor = await api.post(CATALOG, {"after": "not-a-cursor"})
    assert bad_cursor.error_codes == ["INVALID_INPUT"]
    hidden = await api.post('{ catalogItem(key: "hidden") { key visible } }')
    assert hidden.data == {"catalogItem": {"key": "hidden", "visible": False}}


async def test_redeem_through_the_api(api: GraphQLClient, runtime: Runtime) -> None:
    alice = await member_with_points(api, runtime, "alice", 1000)
    await upsert(api, key="mug", cost=300, stock=2, perMemberLimit=5)

    ok = await redeem(api, "alice", "mug", "order-1", quantity=2)
    assert ok["errors"] == []
    assert ok["redemption"]["item"] == {"key": "mug"}
    assert (ok["redemption"]["quantity"], ok["redemption"]["cost"]) == (2, 600)
    assert ok["redemption"]["status"] == "PENDING"
    replay = await redeem(api, "alice", "mug", "order-1", quantity=2)
    assert replay["redemption"] == ok["redemption"]
    conflict = await redeem(api, "alice", "mug", "order-1", quantity=1)
    assert conflict["errors"][0]["code"] == "IDEMPOTENCY_CONFLICT"
    before = await snapshot(runtime)
    for item, quantity, code in (
        ("mug", 1, "OUT_OF_STOCK"),
        ("nothing", 1, "NOT_FOUND"),
        ("mug", 0, "INVALID_INPUT"),
    ):
        refused = await redeem(api, "alice", item, "order-2", quantity=quantity)
        assert refused["redemption"] is None
        assert [e["code"] for e in refused["errors"]] == [code]
    assert await snapshot(runtime) == before
    assert await balance(runtime, alice) == 400

    variables = {"input": {"itemKey": "mug", "idempotencyKey": "x"}}
    assert (await api.admin(REDEEM, variables)).error_codes == ["FORBIDDEN"]
    assert (await api.post(REDEEM, variables)).error_codes == ["UNAUTHENTICATED"]
    stranger = await api.as_member("not-registered", REDEEM, variables)
    assert stranger.data["redeem"]["errors"][0]["code"] == "NOT_FOUND"
    assert await snapshot(runtime) == before

    me = (await api.as_member("alice", "{ me { lastActiveAt } }")).data["me"]
    assert me["lastActiveAt"] is not None


async def test_a_redemption_is_one_statement_without_begin_or_commit(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    dora = await member_with_points(api, runtime, "dora", 1000)
    await upsert(api, key="pin", cost=10, stock=5, perMemberLimit=3)
    await redeem(api, "dora", "pin", "warm-up")  # the caches (token, subscriptions) filled
    sent = record_round_trips(monkeypatch)
    done = await redeem(api, "dora", "pin", "k-1", query=REDEEM_BARE)
    assert done["errors"] == [] and done["redemption"]["cost"] == 10
    assert len(sent) == 1, sent  # the lookup, the checks and the writes: one round trip
    assert "redemptions_redeem_by_key" in sent[0]
    assert not [q for q in sent if q.split()[0].upper().rstrip(";") in ("BEGIN", "COMMIT")]
    # what the statement refuses comes back as a payload error, and wrote nothing
    await redeem(api, "dora", "pin", "k-2")
    before = await snapshot(runtime)
    over = await redeem(api, "dora", "pin", "k-3", query=REDEEM_BARE)
    assert over == {"redemption": None, "errors": [{"code": "LIMIT_REACHED"}]}
    assert await snapshot(runtime) == before
    assert await balance(runtime, dora) == 970
    assert await stock_of(runtime, "pin") == 2


async def test_a_redemption_a_webhook_wants_commits_with_its_event(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await subscribe(runtime, "http://127.0.0.1:9/hooks", ["redemption.created"])
    await member_with_points(api, runtime, "emil", 1000)
    await upsert(api, key="cap", cost=10)
    sent = record_round_trips(monkeypatch)
    done = await redeem(api, "emil", "cap", "k-1", query=REDEEM_BARE)
    assert done["errors"] == []
    words = [q.split()[0].upper().rstrip(";") for q in sent]
    assert words.count("BEGIN") == words.count("COMMIT") == 1  # in a transaction
    (event,) = await outbox(runtime)  # written in it, before the commit
    assert event["type"] == "redemption.created"
    assert event["data"]["redemptionId"] == done["redemption"]["id"]


async def test_member_redemptions_newest_first_and_admin_listing(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await member_with_points(api, runtime, "alice", 10_000)
    await member_with_points(api, runtime, "bob", 10_000)
    await upsert(api, key="mug", cost=10)
    await upsert(api, key="cap", cost=20)
    ids = []
    for n in range(5):
        payload = await redeem(api, "alice", "mug" if n % 2 else "cap", f"k{n}")
        ids.append(payload["redemption"]["id"])
    await redeem(api, "bob", "mug", "k0")

    seen: list[str] = []
    after = None
    while True:
        result = await api.as_member("alice", MY_REDEMPTIONS, {"first": 2, "after": after})
        page = result.data["me"]["redemptions"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == list(reversed(ids))

    await api.admin(FULFILL, {"id": ids[0]})
    listing = await api.admin(
        """query($status: RedemptionStatus, $item: String) {
          redemptions(status: $status, itemKey: $item) {
            edges { node { id status item { key } member { externalId } } } } }""",
        {"status": "PENDING", "item": "mug"},
    )
    nodes = [edge["node"] for edge in listing.data["redemptions"]["edges"]]
    assert [(n["member"]["externalId"], n["item"]["key"]) for n in nodes] == [
        ("bob", "mug"),
        ("alice", "mug"),
        ("alice", "mug"),
    ]
    fulfilled = await api.admin("{ redemptions(status: FULFILLED) { edges { node { id } } } }")
    assert [e["node"]["id"] for e in fulfilled.data["redemptions"]["edges"]] == [ids[0]]
    refused = await api.as_member("alice", "{ redemptions { edges { node { id } } } }")
    assert refused.error_codes == ["FORBIDDEN"]
    unknown = await api.admin('{ redemptions(itemKey: "nope") { edges { cursor } } }')
    assert unknown.error_codes == ["NOT_FOUND"]

    own = await api.as_member("alice", f'{{ redemption(id: "{ids[1]}") {{ id }} }}')
    assert own.data == {"redemption": {"id": ids[1]}}
    other = await api.as_member("bob", f'{{ redemption(id: "{ids[1]}") {{ id }} }}')
    assert other.error_codes == ["FORBIDDEN"]


async def test_cancel_authorization_and_states(api: GraphQLClient, runtime: Runtime) -> None:
    alice = await member_with_points(api, runtime, "alice", 1000)
    await member_with_points(api, runtime, "bob", 1000)
    await upsert(api, key="mug", cost=100, stock=3)
    mine = (await redeem(api, "alice", "mug", "a"))["redemption"]["id"]
    other = (await redeem(api, "alice", "mug", "b"))["redemption"]["id"]

    before = await snapshot(runtime)
    stolen = await api.as_member("bob", CANCEL, {"input": {"redemptionId": mine}})
    assert stolen.error_codes == ["FORBIDDEN"]
    assert (await api.post(CANCEL, {"input": {"redemptionId": mine}})).error_codes == [
        "UNAUTHENTICATED"
    ]
    assert (await api.as_member("alice", FULFILL, {"id": mine})).error_codes == ["FORBIDDEN"]
    missing = await api.as_member("alice", CANCEL, {"input": {"redemptionId": "987654"}})
    assert missing.data["cancelRedemption"]["errors"][0]["code"] == "NOT_FOUND"
    garbage = await api.admin(CANCEL, {"input": {"redemptionId": "abc"}})
    assert garbage.data["cancelRedemption"]["errors"][0]["code"] == "NOT_FOUND"
    assert await snapshot(runtime) == before

    own = await api.as_member("alice", CANCEL, {"input": {"redemptionId": mine, "reason": "oops"}})
    cancelled = own.data["cancelRedemption"]
    assert cancelled["errors"] == []
    assert cancelled["redemption"]["status"] == "CANCELLED"
    assert cancelled["redemption"]["cancelReason"] == "oops"
    transaction_id = cancelled["redemption"]["refundTransactionId"]
    async with runtime.transaction() as session:
        kind = await session.scalar(
            text("SELECT kind FROM transactions WHERE id = :id"), {"id": int(transaction_id)}
        )
    assert kind == "reversal"
    again = await api.as_member("alice", CANCEL, {"input": {"redemptionId": mine}})
    assert again.data["cancelRedemption"]["errors"][0]["code"] == "ALREADY_DONE"

    done = await api.admin(FULFILL, {"id": other})
    assert done.data["fulfillRedemption"]["redemption"]["status"] == "FULFILLED"
    late = await api.as_member("alice", CANCEL, {"input": {"redemptionId": other}})
    assert late.data["cancelRedemption"]["errors"][0]["code"] == "NOT_ELIGIBLE"
    by_admin = await api.admin(CANCEL, {"input": {"redemptionId": other}})
    assert by_admin.data["cancelRedemption"]["errors"][0]["code"] == "NOT_ELIGIBLE"
    assert await balance(runtime, alice) == 900
    assert await stock_of(runtime, "mug") == 2


async def test_a_code_shown_by_the_api_never_returns_to_the_pool(
    api: GraphQLClient, runtime: Runtime
) -> None:
    for who in ("alice", "bob", "carol"):
        await member_with_points(api, runtime, who, 100)
    await upsert(api, key="coffee", cost=10, kind="COUPON", codes=["C1", "C2"])

    shown = await redeem(api, "alice", "coffee", "k", query=REDEEM_WITH_CODE)
    assert shown["redemption"]["code"] in ("C1", "C2")
    unseen = await redeem(api, "bob", "coffee", "k")  # the payload did not ask for the code
    assert unseen["errors"] == []
    # an admin may read it without it counting as shown
    admin_view = await api.admin(f'{{ redemption(id: "{unseen["redemption"]["id"]}") {{ code }} }}')
    assert admin_view.data["redemption"]["code"] in ("C1", "C2")

    for payload in (shown, unseen):
        result = await api.admin(CANCEL, {"input": {"redemptionId": payload["redemption"]["id"]}})
        assert result.data["cancelRedemption"]["errors"] == []
    pool = await upsert(api, key="coffee", cost=10, kind="COUPON")
    assert pool["catalogItem"]["codesAvailable"] == 1
    again = await redeem(api, "carol", "coffee", "k", query=REDEEM_WITH_CODE)
    assert again["redemption"]["code"] == admin_view.data["redemption"]["code"]
    history = await api.as_member("alice", MY_REDEMPTIONS)
    (node,) = [e["node"] for e in history.data["me"]["redemptions"]["edges"]]
    assert (node["status"], node["code"]) == ("CANCELLED", shown["redemption"]["code"])
    history = await api.as_member("bob", MY_REDEMPTIONS)
    (node,) = [e["node"] for e in history.data["me"]["redemptions"]["edges"]]
    assert (node["status"], node["code"]) == ("CANCELLED", None)


async def test_lottery_through_the_api(api: GraphQLClient, runtime: Runtime) -> None:
    for n in range(6):
        await member_with_points(api, runtime, f"p{n}", 100)
    await upsert(api, key="trip", cost=10, kind="LOTTERY", perMemberLimit=3)
    for n in range(6):
        payload = await redeem(api, f"p{n}", "trip", "t", quantity=1 + n % 3)
        assert payload["errors"] == []
    draw = """mutation($input: DrawLotteryInput!) { drawLottery(input: $input) {
        draw { seed method entryCount entriesDigest winningEntryIds item { key } }
        winners { id status member { externalId } lotteryEntries { id status } }
        errors { code } } }"""
    refused = await api.as_member("p0", draw, {"input": {"itemKey": "trip", "winners": 2}})
    assert refused.error_codes == ["FORBIDDEN"]
    result = (await api.admin(draw, {"input": {"itemKey": "trip", "winners": 2}})).data
    payload = result["drawLottery"]
    assert payload["errors"] == []
    record = payload["draw"]
    assert record["entryCount"] == 12 and record["item"] == {"key": "trip"}
    assert [w["status"] for w in payload["winners"]] == ["PENDING", "PENDING"]
    assert len({w["member"]["externalId"] for w in payload["winners"]}) == 2

    # the public audit: the entry list and the seed re-derive the winners
    public = await api.post(
        """{ lotteryDraw(itemKey: "trip") { seed entriesDigest winningEntryIds
             entries(first: 100) { edges { node { id status } } } } }"""
    )
    audit = public.data["lotteryDraw"]
    assert audit["seed"] == record["seed"]
    entry_ids = [int(edge["node"]["id"]) for edge in audit["entries"]["edges"]]
    assert lottery.entries_digest(entry_ids) == audit["entriesDigest"]
    async with runtime.transaction() as session:  # members are private; tests may look
        owners = dict(
            (row[0], row[1])
            for row in await session.execute(text("SELECT id, member_id FROM lottery_entries"))
        )
    derived = lottery.pick_winners(audit["seed"], [(i, owners[i]) for i in entry_ids], 2)
    assert [str(i) for i in derived] == audit["winningEntryIds"] == record["winningEntryIds"]

    again = await api.admin(draw, {"input": {"itemKey": "trip", "winners": 2}})
    assert again.data["drawLottery"]["errors"] == [{"code": "ALREADY_DONE"}]
    mine = await api.as_member(
        "p5", "{ me { redemptions { edges { node { status lotteryEntries { status } } } } } }"
    )
    (node,) = [e["node"] for e in mine.data["me"]["redemptions"]["edges"]]
    assert len(node["lotteryEntries"]) == 3  # the history stays, won or lost
    assert {e["status"] for e in node["lotteryEntries"]} <= {"WON", "LOST"}


async def test_concurrent_api_redemptions_never_oversell(
    api: GraphQLClient, runtime: Runtime
) -> None:
    for n in range(30):
        await member_with_points(api, runtime, f"c{n}", 100)
    await upsert(api, key="drop", cost=50, stock=7)
    variables = [{"input": {"itemKey": "drop", "idempotencyKey": f"k{n}"}} for n in range(30)]
    results = await asyncio.gather(
        *(api.post(REDEEM, v, member_token(f"c{n}")) for n, v in enumerate(variables))
    )
    codes = [(r.data["redeem"]["errors"] or [{"code": "ok"}])[0]["code"] for r in results]
    assert codes.count("ok") == 7 and codes.count("OUT_OF_STOCK") == 23
    assert await stock_of(runtime, "drop") == 0
