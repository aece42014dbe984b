"""Bad input at the HTTP and GraphQL level: always a clear 4xx or GraphQL error, never a 500."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from server.app import GraphQLEndpoint
from server.settings import get_settings
from tests.api import GraphQLClient, admin_token, member_token

ME = "{ me { externalId } }"


async def test_health_ready_and_metrics(api: GraphQLClient) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = await api.http.get("/metrics")
    assert metrics.status_code == 200
    assert "questline_http_requests_total" in metrics.text


async def test_request_id_is_echoed_or_generated(api: GraphQLClient) -> None:
    response = await api.http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await api.http.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32


async def test_graphiql_on_get(api: GraphQLClient) -> None:
    response = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_malformed_json_and_content_type(api: GraphQLClient) -> None:
    response = await api.http.post(
        "/graphql", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    response = await api.http.post(
        "/graphql", content=b"query", headers={"Content-Type": "text/csv"}
    )
    assert 400 <= response.status_code < 500
    response = await api.http.post("/graphql", json={"variables": {}})
    assert 400 <= response.status_code < 500


async def test_graphql_errors_are_clear(api: GraphQLClient) -> None:
    unknown = await api.post("{ nope }")
    assert unknown.status in (200, 400)
    assert "nope" in unknown.errors[0]["message"]
    syntax = await api.post("{ me { ")
    assert syntax.errors and syntax.status < 500
    wrong_type = await api.admin('{ members(first: "ten") { edges { cursor } } }')
    assert wrong_type.errors and wrong_type.status < 500


async def test_query_limits(api: GraphQLClient) -> None:
    aliases = " ".join(f"a{i}: __typename" for i in range(100))
    result = await api.post("{ " + aliases + " }")
    assert result.errors and "alias" in result.errors[0]["message"].lower()

    deep = "{ members { edges { node { " * 8 + "id" + " } } }" * 8 + " }"
    result = await api.admin(deep)
    assert result.errors and result.status < 500

    huge = "{ " + " ".join("__typename" for _ in range(6000)) + " }"
    result = await api.post(huge)
    assert result.errors and "token" in result.errors[0]["message"].lower()


async def test_bad_tokens_are_refused_with_401(api: GraphQLClient) -> None:
    settings = get_settings()
    now = int(time.time())
    expired = jwt.encode({"sub": "a", "exp": now - 10}, settings.jwt_secret, algorithm="HS256")
    wrong_key = jwt.encode({"sub": "a", "exp": now + 60}, "x" * 40, algorithm="HS256")
    no_exp = jwt.encode({"sub": "a"}, settings.jwt_secret, algorithm="HS256")
    unsigned = jwt.encode({"sub": "a", "exp": now + 60, "role": "admin"}, None, algorithm="none")
    for token in (expired, wrong_key, no_exp, unsigned, "garbage", "ql_unknownkey"):
        result = await api.post(ME, token=token)
        assert result.status == 401, token
        assert result.error_codes == ["UNAUTHENTICATED"]
    response = await api.http.post(
        "/graphql", json={"query": ME}, headers={"Authorization": "Basic abc"}
    )
    assert response.status_code == 401


async def test_member_token_for_unregistered_member(api: GraphQLClient) -> None:
    result = await api.post(ME, token=member_token("ghost"))
    assert result.data == {"me": None}


async def test_an_oversized_body_is_refused_before_graphql(api: GraphQLClient) -> None:
    limit = get_settings().max_request_bytes
    padding = "x" * limit
    declared = await api.http.post("/graphql", json={"query": "{ __typename }", "pad": padding})
    assert declared.status_code == 413
    assert declared.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "{ __typename }", "pad": "'
        for _ in range(limit // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    streamed = await api.http.post(
        "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    within = await api.http.post("/graphql", json={"query": "{ __typename }", "pad": "x" * 1000})
    assert within.json() == {"data": {"__typename": "Query"}}


async def test_a_client_gone_before_its_body_arrived_gets_no_error(app: Any) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)  # no exception: nothing reaches the error middleware
    assert not [m for m in sent if m.get("status", 200) >= 500]


async def test_plain_posts_answer_exactly_as_strawberrys_view(
    api: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain JSON POST runs straight through the schema (``GraphQLEndpoint.plain_post``);
    the same request with a key the fast path does not know goes through strawberry's view.
    Both must give the same status and body, whatever the request."""
    await api.register("plain")
    token = member_token("plain")
    bodies: list[dict[str, Any]] = [
        {"query": "{ me { externalId balance } }"},
        {"query": "query Q($c: String) { me { balance(currency: $c) } }", "variables": {"c": "xp"}},
        {"query": "{ me { externalId } } query Other { __typename }", "operationName": "Other"},
        {"query": "{ me { externalId } } query Other { __typename }"},  # which one to run?
        {"query": '{ member(externalId: "someone-else") { externalId } }'},  # FORBIDDEN
        {"query": "{ me { nope } }"},  # validation error
        {"query": "{ me { externalId "},  # syntax error
        {"query": "subscription { memberUpdates { kind } }"},  # not over plain HTTP
        {"query": "query($n: Int!) { __typename }", "variables": {"n": "x"}},
        {"query": "{ me { externalId } }", "variables": None, "operationName": None},
        {"query": 'mutation { checkIn(input: {idempotencyKey: "same"}) { errors { code } } }'},
        {"query": 'mutation { checkIn(input: {idempotencyKey: "same"}) { errors { code } } }'},
    ]
    taken: list[bool] = []
    original = GraphQLEndpoint.plain_post

    async def spy(self: GraphQLEndpoint, *args: Any) -> bool:
        taken.append(await original(self, *args))
        return taken[-1]

    monkeypatch.setattr(GraphQLEndpoint, "plain_post", spy)
    headers = {"Authorization": f"Bearer {token}"}
    for body in bodies:
        plain = await api.http.post("/graphql", json=body, headers=headers)
        viewed = await api.http.post("/graphql", json={**body, "unknown": 1}, headers=headers)
        assert plain.status_code < 500, (body, plain.text)
        assert (plain.status_code, plain.json()) == (viewed.status_code, viewed.json()), body
    # every plain request but the subscription took the fast path; no other request did
    subscription = bodies.index(next(b for b in bodies if b["query"].startswith("subscription")))
    expected = [pair for i in range(len(bodies)) for pair in (i != subscription, False)]
    assert taken == expected


async def test_answers_orjson_cannot_encode_fall_back_to_the_standard_library(
    api: GraphQLClient,
) -> None:
    """Answers are encoded by orjson; an integer beyond 64 bits (a quest filter may hold one)
    is encoded by the standard library instead, and non-ASCII text is plain UTF-8."""
    huge = 2**70
    upsert = """mutation($input: UpsertQuestInput!) {
      upsertQuest(input: $input) { quest { key name filter } errors { code } } }"""
    quest = {
        "key": "big-spender",
        "name": "Dépensier élevé",
        "cadence": "ONCE",
        "eventType": "purchase",
        "target": 1,
        "rewards": [{"kind": "POINTS", "amount": 1}],
        "filter": {"amount": {"gte": huge}},
    }
    response = await api.http.post(
        "/graphql",
        json={"query": upsert, "variables": {"input": quest}},
        headers={"Authorization": f"Bearer {admin_token()}"},
    )
    assert response.status_code == 200, response.text
    payload = response.json()["data"]["upsertQuest"]
    assert payload["errors"] == [], payload
    assert payload["quest"]["filter"] == {"amount": {"gte": huge}}  # exact, not a float
    assert b"D\\u00e9pensier" in response.content  # the standard library's escapes
    names = await api.http.post(
        "/graphql",
        json={"query": "{ quests { name } }"},
        headers={"Authorization": f"Bearer {admin_token()}"},
    )
    assert "Dépensier élevé".encode() in names.content  # orjson's UTF-8
