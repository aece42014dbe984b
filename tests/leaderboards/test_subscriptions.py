"""Subscriptions over a real WebSocket (graphql-transport-ws) to a real server: a change made
by another process reaches the subscriber through Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from leaderboards import keys
from server.app import create_app
from server.runtime import Runtime
from tests.api import GraphQLClient, member_token
from tests.leaderboards.test_api import upsert

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[str]:
    """The API on a free port, in this event loop, sharing the test runtime."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(runtime=runtime), host="127.0.0.1", port=port, lifespan="off",
        log_level="warning", ws="websockets-sansio",
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


async def open_session(url: str, token: str | None) -> ClientConnection:
    ws = await connect(url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    payload = {"Authorization": f"Bearer {token}"} if token else {}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    ack = json.loads(await text_frame(ws))
    assert ack["type"] == "connection_ack", ack
    return ws


async def subscribe(
    ws: ClientConnection, query: str, variables: dict[str, Any] | None = None
) -> None:
    await ws.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )
    )


async def text_frame(ws: ClientConnection) -> str:
    """The next message, which must be a text frame: graphql-transport-ws clients (a
    browser's graphql-ws among them) parse text frames only."""
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(raw, str), f"a binary frame: {raw[:80]!r}"
    return raw


async def receive(ws: ClientConnection) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await text_frame(ws))
        if message["type"] not in ("ping", "pong"):
            return message


async def listening(runtime: Runtime, channel: str) -> None:
    """Wait until the server's pub/sub connection listens on ``channel``."""
    for _ in range(200):
        counts = await runtime.redis.pubsub_numsub(channel)
        if counts and counts[0][1] >= 1:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"nobody subscribed to {channel}")


def grant_in_another_process(external_id: str, amount: int, key: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.leaderboards.grant_elsewhere", external_id, str(amount), key],
        cwd=ROOT,
        check=True,
        timeout=60,
    )


MEMBER_UPDATES = "subscription { memberUpdates { kind currency amount balance transactionId } }"
BOARD_UPDATES = """subscription($key: String!) {
  leaderboardUpdates(key: $key, first: 3) {
    key period entries { rank score member { externalId } }
  }
}"""


async def test_a_balance_change_made_elsewhere_reaches_the_member(
    api: GraphQLClient, runtime: Runtime, server: str
) -> None:
    member = await api.register("sub-1")
    ws = await open_session(server, member_token("sub-1"))
    try:
        await subscribe(ws, MEMBER_UPDATES)
        await listening(runtime, keys.member_channel(runtime.redis, int(member["id"])))
        await asyncio.to_thread(grant_in_another_process, "sub-1", 42, "elsewhere-1")
        update = await receive(ws)
        assert update["type"] == "next", update
        data = update["payload"]["data"]["memberUpdates"]
        assert {k: v for k, v in data.items() if k != "transactionId"} == {
            "kind": "BALANCE", "currency": "points", "amount": 42, "balance": 42,
        }  # fmt: skip
        assert data["transactionId"]
    finally:
        await ws.close()


async def test_a_board_sends_its_standings_then_every_change(
    api: GraphQLClient, runtime: Runtime, server: str
) -> None:
    await upsert(api, key="live", name="Live", metric="POINTS_EARNED", period="DAILY")
    await api.register("sub-2")
    ws = await open_session(server, None)  # boards are public
    try:
        await subscribe(ws, BOARD_UPDATES, {"key": "live"})
        first = await receive(ws)
        assert first["payload"]["data"]["leaderboardUpdates"]["entries"] == []
        await listening(runtime, keys.board_channel(runtime.redis, "live"))
        await asyncio.to_thread(grant_in_another_process, "sub-2", 9, "elsewhere-2")
        changed = (await receive(ws))["payload"]["data"]["leaderboardUpdates"]
        assert changed["entries"] == [{"rank": 1, "score": 9, "member": {"externalId": "sub-2"}}]
    finally:
        await ws.close()


async def test_member_updates_need_a_member_token(server: str) -> None:
    ws = await open_session(server, None)
    try:
        await subscribe(ws, MEMBER_UPDATES)
        refused = await receive(ws)
        assert refused["type"] in ("error", "next")
        errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        await ws.close()
    with pytest.raises(ConnectionClosed) as refused_init:  # a bad token: refused at init
        await open_session(server, "not-a-token")
    assert refused_init.value.rcvd is not None and refused_init.value.rcvd.code == 4403


async def test_a_completed_quest_tells_the_member_everything_it_gave(
    api: GraphQLClient, runtime: Runtime, server: str
) -> None:
    from badges.service import BadgeInput, upsert_badge
    from badges.titles import TitleInput, upsert_title
    from members.tiers import TierInput, upsert_tier
    from tests.quests.helpers import record, upsert_quest

    async with runtime.transaction() as session:
        await upsert_tier(session, TierInput(key="base", name="Base", rank=0, xp_threshold=0))
        await upsert_tier(session, TierInput(key="silver", name="Silver", rank=1, xp_threshold=100))
        await upsert_badge(session, BadgeInput(key="first-cup", name="First cup"))
        await upsert_title(
            session, TitleInput(key="regular", name="Regular"), now=datetime.now(UTC)
        )
    quest = await upsert_quest(
        api, key="first-coffee", cadence="ONCE", eventType="coffee", target=1,
        rewards=[{"kind": "XP", "amount": 150}, {"kind": "BADGE", "key": "first-cup"},
                 {"kind": "TITLE", "key": "regular"}],
    )  # fmt: skip
    assert quest["errors"] == []
    member = await api.register("hero")
    ws = await open_session(server, member_token("hero"))
    query = """subscription { memberUpdates {
        kind currency amount balance questKey badgeKey level titleKey tierKey } }"""
    try:
        await subscribe(ws, query)
        await listening(runtime, keys.member_channel(runtime.redis, int(member["id"])))
        assert (await record(api, "hero", "coffee", "cup-1"))["errors"] == []
        seen: list[dict[str, Any]] = []
        while len(seen) < 5:
            seen.append((await receive(ws))["payload"]["data"]["memberUpdates"])
    finally:
        await ws.close()
    shown = {u["kind"]: {k: v for k, v in u.items() if v is not None and k != "kind"} for u in seen}
    assert shown == {
        "QUEST_COMPLETED": {"questKey": "first-coffee"},
        "BALANCE": {"currency": "xp", "amount": 150, "balance": 150},
        "BADGE": {"badgeKey": "first-cup", "level": 1},
        "TITLE": {"titleKey": "regular"},
        "TIER": {"tierKey": "silver"},
    }


async def test_every_kind_of_balance_change_reaches_the_member(
    api: GraphQLClient, runtime: Runtime, server: str
) -> None:
    """Not only credits: a deduction, a transfer out, a reversal, expiry and vesting are told
    too, each with its change and the balance after it."""
    from datetime import timedelta

    from ledger import service as ledger

    member = await api.register("mover")
    other = await api.register("receiver")
    mover, receiver = int(member["id"]), int(other["id"])
    async with runtime.transaction() as session:
        await ledger.grant(session, mover, 100, idempotency_key="mv-grant")
        soon = datetime.now(UTC) + timedelta(seconds=1)
        await ledger.grant(session, mover, 7, idempotency_key="mv-expiring", expires_at=soon)
    ws = await open_session(server, member_token("mover"))

    async def told() -> tuple[Any, ...]:
        update = (await receive(ws))["payload"]["data"]["memberUpdates"]
        assert update["transactionId"]
        return update["kind"], update["currency"], update["amount"], update["balance"]

    try:
        await subscribe(ws, MEMBER_UPDATES)
        await listening(runtime, keys.member_channel(runtime.redis, mover))
        async with runtime.transaction() as session:
            deducted = await ledger.deduct(session, mover, 10, idempotency_key="mv-deduct")
        assert await told() == ("BALANCE", "points", -10, 97)
        async with runtime.transaction() as session:
            await ledger.transfer(session, mover, receiver, 20, idempotency_key="mv-transfer")
        assert await told() == ("BALANCE", "points", -20, 77)
        async with runtime.transaction() as session:
            await ledger.reverse(session, deducted.transaction_id)
        assert await told() == ("BALANCE", "points", 10, 87)
        await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
        async with runtime.transaction() as session:
            await ledger.settle_expirations(session)
        assert await told() == ("BALANCE", "points", -7, 80)
        async with runtime.transaction() as session:  # vested later by the hourly job
            available_at = datetime.now(UTC) + timedelta(milliseconds=300)
            await ledger.credit_pending(
                session, mover, 5, idempotency_key="mv-pending", available_at=available_at
            )
        await asyncio.sleep(0.4)
        async with runtime.transaction() as session:
            await ledger.vest_pending(session)
        assert await told() == ("BALANCE", "points", 5, 85)
    finally:
        await ws.close()
