"""Leaderboards through GraphQL, as a client would use them: public reads, ``me``, ``around``,
definitions, errors, and the API with Redis unreachable."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from badges import titles
from leaderboards import updates
from leaderboards.rebuild import rebuild
from leaderboards.tasks import run_maintain
from members import service as member_service
from schema.leaderboards import FACES_SQL
from server.app import create_app
from server.cache import clear_all
from server.runtime import Runtime
from server.settings import Settings
from tests.api import GraphQLClient
from tests.support import record_statements

BOARD = """query($key: String!, $first: Int, $around: String, $period: String) {
  leaderboard(key: $key, first: $first, around: $around, period: $period) {
    key name period periodType periodStart periodEnd closed totalEntries
    entries { rank score member { externalId displayName activeTitle { name } } }
    me { rank score member { externalId } }
  }
}"""
UPSERT = """mutation($input: UpsertLeaderboardInput!) {
  upsertLeaderboard(input: $input) {
    leaderboard { key name metric eventType period active rewards { rank toRank amount currency } }
    errors { code field message }
  }
}"""
GRANT = """mutation($input: GrantPointsInput!) {
  grantPoints(input: $input) { errors { code message } }
}"""


async def upsert(api: GraphQLClient, **fields: Any) -> dict[str, Any]:
    result = await api.admin(UPSERT, {"input": fields})
    payload: dict[str, Any] = result.data["upsertLeaderboard"]
    return payload


async def grant_points(api: GraphQLClient, external_id: str, amount: int, key: str) -> None:
    result = await api.admin(
        GRANT,
        {
            "input": {
                "externalId": external_id,
                "amount": amount,
                "reason": "test",
                "idempotencyKey": key,
            }
        },
    )
    assert result.data["grantPoints"]["errors"] == [], result.body


async def test_a_public_board_with_titles_me_and_around(
    api: GraphQLClient, runtime: Runtime
) -> None:
    created = await upsert(
        api,
        key="weekly-points",
        name="Weekly points",
        metric="POINTS_EARNED",
        period="WEEKLY",
        rewards=[{"rank": 1, "amount": 1000}, {"rank": 2, "toRank": 3, "amount": 100}],
    )
    assert created["errors"] == []
    assert created["leaderboard"]["rewards"] == [
        {"rank": 1, "toRank": 1, "amount": 1000, "currency": "points"},
        {"rank": 2, "toRank": 3, "amount": 100, "currency": "points"},
    ]
    for n in range(1, 8):
        await api.register(f"player-{n}", displayName=f"Player {n}")
        await grant_points(api, f"player-{n}", 10 * n, f"k{n}")
    async with runtime.transaction() as session:
        now = datetime.now(UTC)
        await titles.upsert_title(
            session, titles.TitleInput("cxo", "Chief Experience Officer"), now=now
        )
        member = await member_service.require_member(session, "player-7")
        await titles.grant_title(session, member.id, "cxo", now=now)
        await titles.equip_title(session, member.id, "cxo", now=now)

    anonymous = await api.post(BOARD, {"key": "weekly-points", "first": 3})
    board = anonymous.data["leaderboard"]
    assert board["periodType"] == "WEEKLY" and board["period"].count("-W") == 1
    assert board["closed"] is False and board["totalEntries"] == 7 and board["me"] is None
    assert board["entries"] == [
        {"rank": 1, "score": 70, "member": {"externalId": "player-7", "displayName": "Player 7",
                                            "activeTitle": {"name": "Chief Experience Officer"}}},
        {"rank": 2, "score": 60, "member": {"externalId": "player-6", "displayName": "Player 6",
                                            "activeTitle": None}},
        {"rank": 3, "score": 50, "member": {"externalId": "player-5", "displayName": "Player 5",
                                            "activeTitle": None}},
    ]  # fmt: skip

    mine = await api.as_member("player-2", BOARD, {"key": "weekly-points", "first": 2})
    assert mine.data["leaderboard"]["me"] == {
        "rank": 6, "score": 20, "member": {"externalId": "player-2"},
    }  # fmt: skip
    fragment = """query { leaderboard(key: "weekly-points", first: 1) { ...Mine } }
                  fragment Mine on Leaderboard { me { rank } }"""
    assert (await api.as_member("player-3", fragment)).data["leaderboard"]["me"] == {"rank": 5}
    around = await api.post(BOARD, {"key": "weekly-points", "first": 3, "around": "player-1"})
    assert [e["rank"] for e in around.data["leaderboard"]["entries"]] == [5, 6, 7]
    stranger = await api.post(BOARD, {"key": "weekly-points", "around": "nobody"})
    assert stranger.data["leaderboard"]["entries"] == []

    listed = await api.post("{ leaderboards { key metric period } }")
    assert listed.data["leaderboards"] == [
        {"key": "weekly-points", "metric": "POINTS_EARNED", "period": "WEEKLY"}
    ]


async def test_member_data_comes_in_one_batch(
    api: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upsert(api, key="crowd", name="Crowd", metric="POINTS_EARNED", period="ALL_TIME")
    for n in range(1, 21):
        await api.register(f"c{n}")
        await grant_points(api, f"c{n}", n, f"c{n}")
    sent = record_statements(monkeypatch)

    def batches() -> list[int]:
        return [len(args[0]) for sql, args in sent if sql == FACES_SQL]

    clear_all()
    result = await api.post(BOARD, {"key": "crowd", "first": 20})
    assert len(result.data["leaderboard"]["entries"]) == 20
    assert batches() == [20]  # one query for all twenty members and their titles
    again = await api.post(BOARD, {"key": "crowd", "first": 20})
    assert again.data == result.data and batches() == [20]  # shown a moment ago: no query


async def test_admin_only_definitions_and_clear_errors(api: GraphQLClient) -> None:
    fields = {"key": "k", "name": "K", "metric": "EVENT_COUNT", "period": "DAILY"}
    refused = await api.post(UPSERT, {"input": fields})
    assert refused.error_codes == ["UNAUTHENTICATED"]
    await api.register("m1")
    as_member = await api.as_member("m1", UPSERT, {"input": fields})
    assert as_member.error_codes == ["FORBIDDEN"]
    invalid = await upsert(api, **fields)
    assert invalid["errors"] == [
        {"code": "INVALID_INPUT", "field": "eventType",
         "message": "an EVENT_COUNT board needs an eventType"},
    ]  # fmt: skip
    assert (await upsert(api, **fields, eventType="coffee"))["errors"] == []

    unknown = await api.post(BOARD, {"key": "nope"})
    assert unknown.error_codes == ["NOT_FOUND"]
    bad_period = await api.post(BOARD, {"key": "k", "period": "last tuesday"})
    assert bad_period.error_codes == ["INVALID_INPUT"] and bad_period.status == 200
    too_many = await api.post(BOARD, {"key": "k", "first": 1000})
    assert too_many.error_codes == ["INVALID_INPUT"]
    named = await api.post(BOARD, {"key": "k", "period": "2026-01-15"})
    assert named.data["leaderboard"]["period"] == "2026-01-15"
    assert named.data["leaderboard"]["periodStart"] == "2026-01-15T00:00:00+00:00"


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def without_redis(
    settings: Settings, runtime: Runtime
) -> AsyncIterator[tuple[GraphQLClient, Runtime]]:
    """An API whose Runtime points at a Redis that is not there (the machine's Redis keeps
    running for everyone else)."""
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    broken = await Runtime.start(dead)
    app = create_app(dead, runtime=broken)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://questline.test") as http:
            yield GraphQLClient(http), broken
    finally:
        updates.bind(runtime)
        await broken.close()


async def test_with_redis_down_the_rest_works_and_boards_say_unavailable(
    api: GraphQLClient, without_redis: tuple[GraphQLClient, Runtime], runtime: Runtime
) -> None:
    down, broken = without_redis
    updates.bind(runtime)  # first, all is well
    await upsert(api, key="ever", name="Ever", metric="POINTS_EARNED", period="ALL_TIME")
    await rebuild(runtime)
    await api.register("before")
    await grant_points(api, "before", 5, "before")

    updates.bind(broken)  # then this process's Redis goes away
    await down.register("during")
    await grant_points(down, "during", 7, "during")  # committed; the board update is missed
    me = await down.as_member("during", "{ me { externalId balance } }")
    assert me.data["me"] == {"externalId": "during", "balance": 7}
    listed = await down.post("{ leaderboards { key } }")
    assert listed.data["leaderboards"] == [{"key": "ever"}]
    failed = await down.post(BOARD, {"key": "ever"})
    assert failed.status == 200
    assert failed.error_codes == ["UNAVAILABLE"]
    assert "temporarily unavailable" in failed.errors[0]["message"]
    assert "Traceback" not in str(failed.body)
    ready = await down.http.get("/readyz")
    assert ready.status_code == 503 and "redis" in ready.json()["problems"]
    async with runtime.read_sessionmaker() as session:
        assert await session.scalar(text("SELECT stale_since IS NOT NULL FROM leaderboards"))

    # Redis answers again: the maintenance job rebuilds the stale board
    updates.bind(runtime)
    stale = await api.post(BOARD, {"key": "ever"})
    assert [e["score"] for e in stale.data["leaderboard"]["entries"]] == [5]
    assert [r.boards for r in await run_maintain(runtime)] == [1]
    healed = await api.post(BOARD, {"key": "ever"})
    rows = healed.data["leaderboard"]["entries"]
    assert [(e["member"]["externalId"], e["score"]) for e in rows] == [("during", 7), ("before", 5)]
