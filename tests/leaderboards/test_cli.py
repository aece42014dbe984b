"""``questline leaderboard rebuild`` and ``close``, through the real command."""

from __future__ import annotations

import asyncio

import asyncpg
import redis
from typer.testing import CliRunner

from leaderboards import keys
from leaderboards.encoding import decode
from server.cli import app
from tests.support import plain_dsn

runner = CliRunner()


async def _seed(database_url: str) -> None:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        await conn.execute(
            "INSERT INTO leaderboards (key, name, metric, period)"
            " VALUES ('cli-board', 'CLI', 'POINTS_EARNED', 'ALL_TIME')"
        )
        member = await conn.fetchval(
            "INSERT INTO members (external_id, referral_code) VALUES ('cli', 'CLI1') RETURNING id"
        )
        await conn.execute(
            "SELECT ledger_grant($1, 'points', 77, 'grant', NULL, NULL, NULL, 'cli-1', 'h', NULL,"
            " NULL)",
            member,
        )
    finally:
        await conn.close()


def test_rebuild_command(database_url: str, redis_url: str) -> None:
    asyncio.run(_seed(database_url))
    result = runner.invoke(app, ["leaderboard", "rebuild", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Rebuilt 1 board(s), 1 key(s), 1 member score(s)" in result.stdout
    client = redis.Redis.from_url(redis_url)
    try:
        value = client.zscore(keys.board_key("cli-board", 1, "all"), "1")
        assert value is not None and decode(value)[0] == 77
        assert client.exists(keys.built_key())
    finally:
        client.close()
    unknown = runner.invoke(app, ["leaderboard", "rebuild", "--key", "nope"])
    assert unknown.exit_code == 2 and "no active leaderboard 'nope'" in unknown.stderr
    closed = runner.invoke(app, ["leaderboard", "close"])
    assert closed.exit_code == 0 and "Closed: nothing." in closed.stdout
