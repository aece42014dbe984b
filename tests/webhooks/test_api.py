"""The admin API of webhooks: upsertWebhook (validation, keyed by URL), webhooks,
webhookEventTypes, the delivery log (filters, pagination, attempts) and retries."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api import GraphQLClient, member_token
from tests.webhooks.helpers import deliveries, fast_retries, receiving
from webhooks import delivery
from webhooks.events import EVENT_TYPES

UPSERT = """mutation($input: UpsertWebhookInput!) {
  upsertWebhook(input: $input) {
    webhook { id url events active createdAt updatedAt }
    errors { code field message }
  }
}"""

DELIVERIES = """query($first: Int, $after: String, $status: WebhookDeliveryStatus,
                     $event: String, $eventId: ID, $webhookId: ID) {
  webhookDeliveries(first: $first, after: $after, status: $status, event: $event,
                    eventId: $eventId, webhookId: $webhookId) {
    edges { cursor node {
      id eventId eventType status attemptCount lastStatusCode lastError nextAttemptAt
      lastAttemptAt deliveredAt createdAt payload
      webhook { url }
      attempts { attempt statusCode error durationMs at }
    } }
    pageInfo { hasNextPage endCursor }
  }
}"""

GRANT = """mutation($input: GrantPointsInput!) { grantPoints(input: $input) { errors { code } } }"""


def _input(url: str, **fields: Any) -> dict[str, Any]:
    return {"input": {"url": url, "events": ["points.earned"], "secret": "s" * 16, **fields}}


async def test_upsert_is_keyed_by_url_and_validated(api: GraphQLClient) -> None:
    created = (await api.admin(UPSERT, _input("https://hooks.example.com/q"))).data
    webhook = created["upsertWebhook"]["webhook"]
    assert created["upsertWebhook"]["errors"] == []
    assert webhook["events"] == ["points.earned"] and webhook["active"] is True

    changed = (
        await api.admin(
            UPSERT,
            _input(
                "https://hooks.example.com/q",
                events=["badge.awarded", "points.earned", "badge.awarded"],
                active=False,
            ),
        )
    ).data["upsertWebhook"]
    assert changed["webhook"]["id"] == webhook["id"]  # the same endpoint
    assert changed["webhook"]["events"] == ["badge.awarded", "points.earned"]
    assert changed["webhook"]["active"] is False

    refusals = {
        "url": _input("ftp://hooks.example.com/q"),
        "events": _input("https://a.example.com", events=["points.earnt"]),
        "secret": _input("https://a.example.com", secret="short"),
    }
    for field, variables in refusals.items():
        payload = (await api.admin(UPSERT, variables)).data["upsertWebhook"]
        assert payload["webhook"] is None
        assert payload["errors"][0]["code"] == "INVALID_INPUT"
        assert payload["errors"][0]["field"] == field
    for bad in ("not a url", "http://", "https://host:99999/x", "javascript:alert(1)"):
        payload = (await api.admin(UPSERT, _input(bad))).data["upsertWebhook"]
        assert payload["errors"][0]["field"] == "url", bad
    empty = (await api.admin(UPSERT, _input("https://b.example.com", events=[]))).data
    assert empty["upsertWebhook"]["errors"][0]["field"] == "events"

    listed = (await api.admin("{ webhooks { url events active } }")).data["webhooks"]
    assert listed == [
        {
            "url": "https://hooks.example.com/q",
            "events": ["badge.awarded", "points.earned"],
            "active": False,
        }
    ]


async def test_only_admins(api: GraphQLClient) -> None:
    await api.register("nosy")
    for token in (None, member_token("nosy")):
        result = await api.post(UPSERT, _input("https://x.example.com"), token)
        assert result.error_codes in (["UNAUTHENTICATED"], ["FORBIDDEN"])
        for query in ("{ webhooks { url } }", "{ webhookDeliveries { edges { cursor } } }"):
            refused = await api.post(query, token=token)
            assert refused.error_codes in (["UNAUTHENTICATED"], ["FORBIDDEN"])
    assert (await api.admin("{ webhooks { url } }")).data["webhooks"] == []
    types = (await api.post("{ webhookEventTypes { name description } }")).data
    assert [t["name"] for t in types["webhookEventTypes"]] == list(EVENT_TYPES)


async def test_the_delivery_log(api: GraphQLClient, runtime: Any) -> None:
    fast = fast_retries(runtime)
    with receiving(fail_first=1) as receiver:
        payload = (
            await api.admin(
                UPSERT,
                _input(receiver.url, events=["member.registered", "points.earned"]),
            )
        ).data["upsertWebhook"]
        webhook_id = payload["webhook"]["id"]
        await api.register("logged")
        for n in range(3):
            await api.admin(
                GRANT,
                {
                    "input": {
                        "externalId": "logged",
                        "amount": 5 + n,
                        "reason": "test",
                        "idempotencyKey": f"log-{n}",
                    }
                },
            )
        ids = [r["id"] for r in await deliveries(fast)]
        await delivery.deliver(fast, ids, schedule_retries=False)  # all fail once

        page = (await api.admin(DELIVERIES, {"first": 2})).data["webhookDeliveries"]
        assert len(page["edges"]) == 2 and page["pageInfo"]["hasNextPage"]
        rest = (
            await api.admin(DELIVERIES, {"first": 10, "after": page["pageInfo"]["endCursor"]})
        ).data["webhookDeliveries"]
        nodes = [e["node"] for e in page["edges"] + rest["edges"]]
        assert [int(n["id"]) for n in nodes] == sorted(ids, reverse=True)  # newest first
        for node in nodes:
            assert node["status"] == "PENDING" and node["attemptCount"] == 1
            assert node["lastStatusCode"] == 503 and node["nextAttemptAt"]
            assert node["webhook"] == {"url": receiver.url}
            assert node["attempts"][0]["statusCode"] == 503
            assert node["payload"]["id"] == node["eventId"]
            assert node["payload"]["type"] == node["eventType"]

        earned = (await api.admin(DELIVERIES, {"event": "points.earned"})).data
        assert len(earned["webhookDeliveries"]["edges"]) == 3
        one = nodes[0]["eventId"]
        by_event = (await api.admin(DELIVERIES, {"eventId": one})).data
        assert [e["node"]["eventId"] for e in by_event["webhookDeliveries"]["edges"]] == [one]
        by_hook = (await api.admin(DELIVERIES, {"webhookId": webhook_id})).data
        assert len(by_hook["webhookDeliveries"]["edges"]) == 4

        await delivery.deliver_due(fast, schedule_retries=False)
        await asyncio.sleep(0.3)  # the backoff
        await delivery.deliver_due(fast, schedule_retries=False)
        done = (await api.admin(DELIVERIES, {"status": "DELIVERED"})).data
        delivered = [e["node"] for e in done["webhookDeliveries"]["edges"]]
        assert len(delivered) == 4
        assert all(n["deliveredAt"] and n["nextAttemptAt"] is None for n in delivered)
        assert [a["statusCode"] for a in delivered[0]["attempts"]] == [503, 200]
        assert (await api.admin(DELIVERIES, {"status": "PENDING"})).data["webhookDeliveries"][
            "edges"
        ] == []

    bad = await api.admin(DELIVERIES, {"eventId": "not-a-uuid"})
    assert bad.error_codes == ["INVALID_INPUT"]
    too_many = await api.admin(DELIVERIES, {"first": 101})
    assert too_many.error_codes == ["INVALID_INPUT"]


async def test_retry_a_failed_delivery(api: GraphQLClient, runtime: Any) -> None:
    fast = fast_retries(runtime, webhook_max_attempts=1)
    retry = """mutation($id: ID!) { retryWebhookDelivery(input: {deliveryId: $id}) {
        delivery { id status nextAttemptAt } errors { code field } } }"""
    with receiving(fail_first=1) as receiver:
        await api.admin(UPSERT, _input(receiver.url))
        await api.register("retried")
        await api.admin(
            GRANT,
            {
                "input": {
                    "externalId": "retried",
                    "amount": 5,
                    "reason": "test",
                    "idempotencyKey": "r-1",
                }
            },
        )
        (row,) = await deliveries(fast)
        await delivery.deliver(fast, [row["id"]], schedule_retries=False)
        assert (await deliveries(fast))[0]["status"] == "failed"

        again = (await api.admin(retry, {"id": str(row["id"])})).data["retryWebhookDelivery"]
        assert again["errors"] == [] and again["delivery"]["status"] == "PENDING"
        await delivery.deliver(fast, [row["id"]], schedule_retries=False)
        assert (await deliveries(fast))[0]["status"] == "delivered"
        assert len(receiver.snapshot()) == 2

        done = (await api.admin(retry, {"id": str(row["id"])})).data["retryWebhookDelivery"]
        assert done["errors"] == [{"code": "ALREADY_DONE", "field": "deliveryId"}]
    missing = (await api.admin(retry, {"id": "999999"})).data["retryWebhookDelivery"]
    assert missing["errors"] == [{"code": "NOT_FOUND", "field": "deliveryId"}]
