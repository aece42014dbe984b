"""Set-up for quest tests: quests and events through GraphQL, as an admin and a back-end."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.api import GraphQLClient

UPSERT_QUEST = """mutation($input: UpsertQuestInput!) {
  upsertQuest(input: $input) { quest { key target } errors { code field message } } }"""

RECORD_EVENT = """mutation($input: RecordEventInput!) {
  recordEvent(input: $input) {
    event { id type occurredAt }
    progressed { quest { key } progress target status periodStart periodEnd }
    completed { quest { key } progress status }
    awarded { kind currency amount key }
    errors { code field message }
  }
}"""

POINTS = "{ me { balance } }"


async def upsert_quest(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", fields["key"].replace("-", " ").title())
    fields.setdefault("rewards", [{"kind": "POINTS", "amount": 10}])
    payload: dict[str, Any] = (await api.admin(UPSERT_QUEST, {"input": fields})).data["upsertQuest"]
    return payload


async def record(
    api: GraphQLClient,
    external_id: str,
    event_type: str,
    key: str,
    properties: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    variables: dict[str, Any] = {
        "externalId": external_id,
        "type": event_type,
        "idempotencyKey": key,
        "properties": properties or {},
    }
    if occurred_at is not None:
        variables["occurredAt"] = occurred_at.isoformat()
    payload: dict[str, Any] = (await api.admin(RECORD_EVENT, {"input": variables})).data[
        "recordEvent"
    ]
    return payload


async def balance(api: GraphQLClient, external_id: str, currency: str = "points") -> int:
    query = "query($c: String!) { member(externalId: $ID) { balance(currency: $c) } }".replace(
        "$ID", f'"{external_id}"'
    )
    value: int = (await api.admin(query, {"c": currency})).data["member"]["balance"]
    return value
