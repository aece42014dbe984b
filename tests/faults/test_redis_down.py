"""Redis goes away: the ledger and every write that does not need Redis keep working,
``/readyz`` names Redis, leaderboards say they are unavailable, and once Redis is back (empty:
its data lost) the boards are rebuilt from PostgreSQL.

The API (``questline serve``) runs on the test database and on a Redis of the test's own (also
its Dramatiq broker, as in a default deployment), which the test stops with SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from schema.root import schema as root_schema
from server.embedded import EmbeddedRedis
from tests.api import admin_token, member_token
from tests.faults.conftest import api_process, child_env, questline_command, redis_env

REQUEST_BUDGET = 5.0  # seconds one request may take while Redis is down


def has_leaderboards() -> bool:
    query = root_schema._schema.query_type
    mutation = root_schema._schema.mutation_type
    return (
        query is not None
        and "leaderboard" in query.fields
        and mutation is not None
        and "upsertLeaderboard" in mutation.fields
        and importlib.util.find_spec("leaderboards.rebuild") is not None
    )


class Api:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        started = time.monotonic()
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token or admin_token()}"},
        )
        took = time.monotonic() - started
        assert took < REQUEST_BUDGET, f"{query[:60]} took {took:.1f} s"
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ok(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """The operation's payload, asserting no error of any kind."""
        body = await self.call(query, variables, token)
        assert not body.get("errors"), body
        payload: dict[str, Any] = next(iter(body["data"].values()))
        assert not (isinstance(payload, dict) and payload.get("errors")), body
        return payload

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        response = await self.http.get("/readyz")
        return response.status_code, response.json()


GRANT = """mutation($i: GrantPointsInput!) { grantPoints(input: $i) {
  transaction { id } errors { code } } }"""
DEDUCT = """mutation($i: DeductPointsInput!) { deductPoints(input: $i) {
  transaction { id } errors { code } } }"""
REGISTER = """mutation($i: RegisterMemberInput!) { registerMember(input: $i) {
  member { externalId } errors { code } } }"""
RECORD = """mutation($i: RecordEventInput!) { recordEvent(input: $i) {
  event { id } errors { code } } }"""
CHECK_IN = """mutation { checkIn { streak { current } errors { code } } }"""
REDEEM = """mutation($i: RedeemInput!) { redeem(input: $i) {
  redemption { id status } errors { code } } }"""
UPSERT_ITEM = """mutation($i: UpsertCatalogItemInput!) { upsertCatalogItem(input: $i) {
  errors { code } } }"""
BALANCE = "{ me { balance } }"
BOARD = """query($key: String!) { leaderboard(key: $key, first: 10) {
  entries { score member { externalId } } } }"""


def grant(external_id: str, amount: int, key: str) -> dict[str, Any]:
    return {
        "i": {"externalId": external_id, "amount": amount, "reason": "test", "idempotencyKey": key}
    }


async def wait_for_readiness(api: Api, status: int, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        got, body = await api.readiness()
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/readyz never answered {status}: {body}"
        await asyncio.sleep(0.1)


def lose_redis_data(redis_server: EmbeddedRedis) -> None:
    """Stopped Redis comes back empty: its persistence files are gone."""
    for path in redis_server.dir.iterdir():
        if path.name != "redis.log":
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


@pytest.mark.slow
async def test_ledger_and_other_writes_keep_working_while_redis_is_down(
    database_url: str, own_redis: EmbeddedRedis, workdir: Path
) -> None:
    with api_process(workdir, **redis_env(own_redis.url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            api = Api(http)
            for name in ("r-alice", "r-bob"):
                await api.ok(REGISTER, {"i": {"externalId": name}})
                await api.ok(GRANT, grant(name, 100, f"seed-{name}"))
            await api.ok(
                UPSERT_ITEM,
                {
                    "i": {
                        "key": "r-reward",
                        "name": "Reward",
                        "cost": 10,
                        "kind": "REWARD",
                        "visible": True,
                    }
                },
            )

            own_redis.stop()
            body = await wait_for_readiness(api, 503)
            assert set(body["problems"]) == {"redis"}, body

            await api.ok(GRANT, grant("r-alice", 50, "down-1"))
            await api.ok(DEDUCT, grant("r-bob", 10, "down-2"))
            await api.ok(REGISTER, {"i": {"externalId": "r-carol"}})
            await api.ok(
                RECORD,
                {"i": {"externalId": "r-bob", "type": "purchase", "idempotencyKey": "down-3"}},
            )
            await api.ok(CHECK_IN, token=member_token("r-bob"))
            redeemed = await api.ok(
                REDEEM,
                {"i": {"itemKey": "r-reward", "quantity": 1, "idempotencyKey": "down-4"}},
                member_token("r-bob"),
            )
            assert redeemed["redemption"]["status"] == "PENDING"
            alice = await api.ok(BALANCE, token=member_token("r-alice"))
            assert alice == {"balance": 150}
            # A replay while down is still a replay (idempotency lives in PostgreSQL).
            replay = await api.ok(GRANT, grant("r-alice", 50, "down-1"))
            alice_again = await api.ok(BALANCE, token=member_token("r-alice"))
            assert alice_again == {"balance": 150}, replay

            own_redis.start()
            await wait_for_readiness(api, 200)
            await api.ok(GRANT, grant("r-alice", 1, "after-1"))


@pytest.mark.slow
@pytest.mark.skipif(
    not has_leaderboards(),
    reason="needs the leaderboards module (leaderboard query, upsertLeaderboard, "
    "`questline leaderboard rebuild`)",
)
async def test_leaderboards_say_unavailable_then_are_rebuilt_from_postgres(
    database_url: str, own_redis: EmbeddedRedis, workdir: Path
) -> None:
    with api_process(workdir, **redis_env(own_redis.url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            api = Api(http)
            await api.ok(
                """mutation($i: UpsertLeaderboardInput!) { upsertLeaderboard(input: $i) {
                     errors { code } } }""",
                {
                    "i": {
                        "key": "r-board",
                        "name": "Points",
                        "metric": "POINTS_EARNED",
                        "period": "ALL_TIME",
                        "active": True,
                    }
                },
            )
            await api.ok(REGISTER, {"i": {"externalId": "r-alice"}})
            await api.ok(GRANT, grant("r-alice", 100, "lb-1"))
            board = await api.ok(BOARD, {"key": "r-board"})
            assert board["entries"] == [{"score": 100, "member": {"externalId": "r-alice"}}]

            own_redis.stop()
            await wait_for_readiness(api, 503)
            # Board pages are cached for 250 ms per API process: let that copy age out first.
            await asyncio.sleep(0.3)
            await api.ok(GRANT, grant("r-alice", 50, "lb-2"))  # the board cannot hear of it
            refused = await api.call(BOARD, {"key": "r-board"})
            assert refused["data"] is None, refused
            [error] = refused["errors"]
            assert error["extensions"]["code"] == "UNAVAILABLE", error
            assert "unavailable" in error["message"].lower(), error

            lose_redis_data(own_redis)
            own_redis.start()
            await wait_for_readiness(api, 200)

            rebuild = await asyncio.to_thread(
                subprocess.run,
                [questline_command(), "leaderboard", "rebuild", "--no-progress"],
                env=child_env(**redis_env(own_redis.url)),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
            board = await api.ok(BOARD, {"key": "r-board"})
            assert board["entries"] == [{"score": 150, "member": {"externalId": "r-alice"}}]
