"""Anonymous board reads answered again from the last identical response (server.public_cache):
what is kept, for how long, and what never is."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from leaderboards import service as boards
from leaderboards.encoding import encode
from schema import leaderboards as schema_leaderboards
from server import public_cache
from server.runtime import Runtime
from tests.api import GraphQLClient, member_token
from tests.leaderboards.helpers import board_key_now, grant, make_board, make_member

TOP = """query($key: String!) {
  leaderboard(key: $key, first: 3) { entries { rank score member { externalId } } me { rank } }
}"""


def body(query: str, **variables: Any) -> bytes:
    return json.dumps({"query": query, "variables": variables}).encode()


async def post(api: GraphQLClient, content: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await api.http.post("/graphql", content=content, headers=headers)
    assert response.status_code == 200, response.text
    return response


def leaders(response: httpx.Response) -> list[str]:
    entries = response.json()["data"]["leaderboard"]["entries"]
    return [entry["member"]["externalId"] for entry in entries]


async def two_players(runtime: Runtime) -> tuple[boards.BoardDef, int]:
    board = await make_board(runtime, "cached", period="ALL_TIME")
    first = await make_member(runtime, "first")
    second = await make_member(runtime, "second")
    await grant(runtime, first, 10)
    await grant(runtime, second, 5)
    return board, second


async def test_an_anonymous_read_is_served_again_until_its_max_age(
    api: GraphQLClient, runtime: Runtime
) -> None:
    board, second = await two_players(runtime)
    request = body(TOP, key="cached")
    shown = await post(api, request)
    assert leaders(shown) == ["first", "second"]
    assert public_cache.get(request) == shown.content

    # a score changes behind this process's back (as another API process would change it)
    key = await board_key_now(runtime, board)
    await runtime.redis.zadd(key, {str(second): encode(100, 0)})
    assert (await post(api, request)).content == shown.content  # the kept response
    mine = await post(api, request, member_token("first"))  # a member's view is never kept
    assert leaders(mine) == ["second", "first"]
    assert mine.json()["data"]["leaderboard"]["me"] == {"rank": 2}

    await asyncio.sleep(boards.WINDOW_CACHE_SECONDS + 0.05)
    assert leaders(await post(api, request)) == ["second", "first"]


async def test_a_board_change_made_here_drops_kept_responses(
    api: GraphQLClient, runtime: Runtime
) -> None:
    _, second = await two_players(runtime)
    request = body(TOP, key="cached")
    await post(api, request)
    assert public_cache.get(request) is not None
    await grant(runtime, second, 50)  # applied to the board by this process after commit
    assert public_cache.get(request) is None
    assert leaders(await post(api, request)) == ["second", "first"]


async def test_what_is_never_kept(api: GraphQLClient, runtime: Runtime) -> None:
    await two_players(runtime)
    member_read = body(TOP, key="cached")
    await post(api, member_read, member_token("first"))
    mixed = body(TOP.replace("leaderboard(", "leaderboards { key } leaderboard("), key="cached")
    unknown = body(TOP, key="no-such-board")
    typename = body("{ __typename }")
    for request in (mixed, unknown, typename):
        await post(api, request)
    assert [public_cache.get(r) for r in (member_read, mixed, unknown, typename)] == [None] * 4
    assert (await post(api, unknown)).json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_identical_reads_arriving_together_build_the_answer_once(
    api: GraphQLClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await two_players(runtime)
    built = 0
    build = schema_leaderboards.build_leaderboard

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal built
        built += 1
        await asyncio.sleep(0.05)  # the others arrive while this one is being built
        return await build(*args, **kwargs)

    monkeypatch.setattr(schema_leaderboards, "build_leaderboard", counted)
    request = body(TOP, key="cached")
    answers = await asyncio.gather(*(post(api, request) for _ in range(10)))
    assert built == 1
    assert {answer.content for answer in answers} == {answers[0].content}
    assert leaders(answers[0]) == ["first", "second"]

    public_cache.forget()  # a member's reads are never shared, even when they arrive together
    token = member_token("first")
    await asyncio.gather(*(post(api, request, token) for _ in range(3)))
    assert built == 4
