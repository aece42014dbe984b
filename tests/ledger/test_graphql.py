"""The ledger over GraphQL, through the ASGI app with real tokens."""

from __future__ import annotations

from typing import Any

from ledger import service
from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.ledger.conftest import advance_clock, row_counts, run

TX_FIELDS = "id kind memo reversesId reversedById postings { account amount currency }"
GRANT = (
    "mutation($input: GrantPointsInput!) { grantPoints(input: $input) {"
    f" transaction {{ {TX_FIELDS} }} errors {{ code message field }} }} }}"
)
DEDUCT = (
    "mutation($input: DeductPointsInput!) { deductPoints(input: $input) {"
    f" transaction {{ {TX_FIELDS} }} errors {{ code field }} }} }}"
)
REVERSE = (
    "mutation($input: ReverseTransactionInput!) { reverseTransaction(input: $input) {"
    f" transaction {{ {TX_FIELDS} }} errors {{ code field }} }} }}"
)
MEMBER = """query($ext: String!, $first: Int, $after: String) { member(externalId: $ext) {
    balance pendingBalance xp: balance(currency: "xp")
    expiringPoints(withinDays: 400) { amount expiresAt }
    history(first: $first, after: $after) {
      edges { cursor node { transactionId amount currency kind memo createdAt } }
      pageInfo { hasNextPage endCursor } } } }"""


async def grant(api: GraphQLClient, ext: str, amount: int, key: str, **extra: Any) -> dict:
    result = await api.admin(
        GRANT,
        {"input": {"externalId": ext, "amount": amount, "reason": "test",
                   "idempotencyKey": key, **extra}},
    )  # fmt: skip
    payload: dict[str, Any] = result.data["grantPoints"]
    return payload


async def test_grant_then_read_the_member(api: GraphQLClient) -> None:
    await api.register("ada")
    payload = await grant(api, "ada", 120, "g-1")
    assert payload["errors"] == []
    tx = payload["transaction"]
    assert tx["kind"] == "grant" and tx["memo"] == "test"
    assert sorted(p["amount"] for p in tx["postings"]) == [-120, 120]
    await grant(api, "ada", 5, "g-xp", currency="xp")
    member = (await api.admin(MEMBER, {"ext": "ada"})).data["member"]
    assert (member["balance"], member["pendingBalance"], member["xp"]) == (120, 0, 5)
    assert [lot["amount"] for lot in member["expiringPoints"]] == [120]  # a year, by default
    nodes = [edge["node"] for edge in member["history"]["edges"]]
    assert [(n["amount"], n["currency"]) for n in nodes] == [(5, "xp"), (120, "points")]


async def test_member_sees_itself_but_cannot_grant(api: GraphQLClient) -> None:
    await api.register("bo")
    await grant(api, "bo", 10, "g-1")
    me = await api.as_member("bo", "{ me { balance history { edges { node { amount } } } } }")
    assert me.data["me"]["balance"] == 10
    other = await api.as_member("bo", GRANT, {"input": {
        "externalId": "bo", "amount": 5, "reason": "x", "idempotencyKey": "self"}})  # fmt: skip
    assert other.error_codes == ["FORBIDDEN"]
    anonymous = await api.post("{ ledgerSummary { issued } }")
    assert anonymous.error_codes == ["UNAUTHENTICATED"]
    forbidden = await api.as_member("bo", "{ ledgerSummary { issued } }")
    assert forbidden.error_codes == ["FORBIDDEN"]


async def test_errors_come_back_in_the_payload_and_write_nothing(
    api: GraphQLClient, runtime: Runtime
) -> None:
    await api.register("cy")
    await grant(api, "cy", 50, "seed")
    before = await row_counts(runtime)
    cases = [
        (GRANT, {"externalId": "cy", "amount": 0, "reason": "r", "idempotencyKey": "a"},
         "INVALID_INPUT", "amount"),
        (GRANT, {"externalId": "cy", "amount": 1_000_000_001, "reason": "r",
                 "idempotencyKey": "b"}, "INVALID_INPUT", "amount"),
        (GRANT, {"externalId": "nobody", "amount": 5, "reason": "r", "idempotencyKey": "c"},
         "NOT_FOUND", "externalId"),
        (GRANT, {"externalId": "cy", "amount": 5, "reason": "r", "idempotencyKey": "d",
                 "currency": "gold"}, "INVALID_INPUT", "currency"),
        (GRANT, {"externalId": "cy", "amount": 51, "reason": "r", "idempotencyKey": "seed"},
         "IDEMPOTENCY_CONFLICT", "idempotencyKey"),
        (DEDUCT, {"externalId": "cy", "amount": 51, "reason": "r", "idempotencyKey": "e"},
         "INSUFFICIENT_FUNDS", "amount"),
        (REVERSE, {"transactionId": "999999", "reason": "r"}, "NOT_FOUND", "transactionId"),
        (REVERSE, {"transactionId": "abc", "reason": "r"}, "NOT_FOUND", "transactionId"),
    ]  # fmt: skip
    for query, data, code, field in cases:
        result = await api.admin(query, {"input": data})
        payload = next(iter(result.data.values()))
        assert payload["transaction"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], data
    assert await row_counts(runtime) == before


async def test_same_key_same_input_returns_the_same_transaction(api: GraphQLClient) -> None:
    await api.register("di")
    first = await grant(api, "di", 30, "once")
    again = await grant(api, "di", 30, "once")
    assert again["errors"] == [] and again["transaction"]["id"] == first["transaction"]["id"]
    member = (await api.admin(MEMBER, {"ext": "di"})).data["member"]
    assert member["balance"] == 30


async def test_deduct_and_reverse(api: GraphQLClient) -> None:
    await api.register("ed")
    await grant(api, "ed", 40, "g")
    deducted = await api.admin(
        DEDUCT,
        {
            "input": {
                "externalId": "ed",
                "amount": 15,
                "reason": "correction",
                "idempotencyKey": "d",
            }
        },
    )
    tx = deducted.data["deductPoints"]["transaction"]  # fmt: skip
    reversed_ = await api.admin(REVERSE, {"input": {"transactionId": tx["id"], "reason": "oops"}})
    reversal = reversed_.data["reverseTransaction"]["transaction"]
    assert reversal["kind"] == "reversal" and reversal["reversesId"] == tx["id"]
    again = await api.admin(REVERSE, {"input": {"transactionId": tx["id"], "reason": "again"}})
    assert again.data["reverseTransaction"]["errors"] == [
        {"code": "ALREADY_DONE", "field": "transactionId"}
    ]
    lookup = await api.admin(
        "query($id: ID!) { transaction(id: $id) { kind reversedById member { externalId } } }",
        {"id": tx["id"]},
    )
    assert lookup.data["transaction"] == {
        "kind": "deduct", "reversedById": reversal["id"], "member": {"externalId": "ed"}
    }  # fmt: skip
    member = (await api.admin(MEMBER, {"ext": "ed"})).data["member"]
    assert member["balance"] == 40


async def test_history_pages_with_cursors(api: GraphQLClient) -> None:
    await api.register("fa")
    for n in range(5):
        await grant(api, "fa", n + 1, f"h{n}")
    first = (await api.admin(MEMBER, {"ext": "fa", "first": 3})).data["member"]["history"]
    assert [e["node"]["amount"] for e in first["edges"]] == [5, 4, 3]
    assert first["pageInfo"]["hasNextPage"]
    rest = await api.admin(
        MEMBER, {"ext": "fa", "first": 3, "after": first["pageInfo"]["endCursor"]}
    )
    page = rest.data["member"]["history"]
    assert [e["node"]["amount"] for e in page["edges"]] == [2, 1]
    assert not page["pageInfo"]["hasNextPage"]
    too_many = await api.admin(MEMBER, {"ext": "fa", "first": 101})
    assert too_many.error_codes == ["INVALID_INPUT"]


async def test_settle_expirations_and_summary(api: GraphQLClient, runtime: Runtime) -> None:
    member = await api.register("gu")
    await grant(api, "gu", 25, "g")
    async with runtime.transaction() as session:
        await service.credit_pending(session, int(member["id"]), 9, idempotency_key="p",
                                     pending_days=3)  # fmt: skip
    await advance_clock(runtime, 400)
    settled = await api.admin(
        "mutation { settleExpirations(input: {}) { expiredLots expiredPoints errors { code } } }"
    )
    assert settled.data["settleExpirations"] == {
        "expiredLots": 1,
        "expiredPoints": 25,
        "errors": [],
    }
    summary = await api.admin(
        "{ ledgerSummary { currency issued spent expired outstanding pending } }"
    )
    assert summary.data["ledgerSummary"] == {
        "currency": "points", "issued": 34, "spent": 0, "expired": 25, "outstanding": 9,
        "pending": 9,
    }  # fmt: skip
    await run(runtime, service.vest_pending)
    view = (await api.admin(MEMBER, {"ext": "gu"})).data["member"]
    assert (view["balance"], view["pendingBalance"]) == (9, 0)


async def test_balances_of_many_members_in_one_list(api: GraphQLClient) -> None:
    for n in range(4):
        await api.register(f"list-{n}")
        await grant(api, f"list-{n}", 10 * (n + 1), f"g{n}")
    result = await api.admin("{ members(first: 10) { nodes { externalId balance } } }")
    balances = {m["externalId"]: m["balance"] for m in result.data["members"]["nodes"]}
    assert balances == {"list-0": 10, "list-1": 20, "list-2": 30, "list-3": 40}
