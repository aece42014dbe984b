"""Leaderboards benchmark: one board of 1,000,000 members. Prints ONE JSON line.

    python bench/leaderboards.py     # QUESTLINE_DATABASE_URL / QUESTLINE_REDIS_URL, else embedded

* Seeds (set-based SQL, in a scratch database) ``BENCH_MEMBERS`` members, each with one
  points grant out of the issuance account (a transaction and two postings, as ``ledger.grant``
  writes them) at spread-out times, and ~10 members per score, so the tie-break matters.
* ``rebuild_s``: ``questline leaderboard rebuild`` of that ALL_TIME points board from
  PostgreSQL (``leaderboards.rebuild``), and ``redis_bytes_per_member``: ``MEMORY USAGE`` of the
  board's sorted set divided by its members.
* ``top10_*`` / ``around_me_*``: GraphQL through ``questline serve --workers 2`` with 32
  connections: the public top 10 (with each member's displayName and activeTitle), and a
  member's own view (``around`` itself, plus ``me``) for 2,000 different members. The public
  top 10 is an anonymous read: after the first request in each 250 ms it is answered from the
  public response cache (``server.public_cache``), as production traffic to a public board
  would be. A member's view is never cached whole; it is measured after a warm-up long enough
  for each API process to have seen every one of the 2,000 views once (steady state).
  ``calibration_typename_rps`` is ``{ __typename }`` on the same servers in the same run:
  the ceiling of the HTTP + GraphQL stack on this machine at that moment. The per-caller rate
  limit is switched off for the run (it would refuse a load test from one address).

Redis keys live under a unique prefix (``QUESTLINE_LEADERBOARD_PREFIX``) in the configured
Redis and are deleted at the end; the scratch database is dropped. The machine may be shared:
figures from a busy box are lower than on an idle one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import calibrate, connect, emit, load, running_api, scratch_servers
from server.auth import issue_token
from server.settings import Settings

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "1000000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
BOARD = "bench-points"
PREFIX = f"bench:{os.getpid()}:{secrets.token_hex(3)}:lb:"
os.environ["QUESTLINE_LEADERBOARD_PREFIX"] = PREFIX  # this process and the API's

ENTRY = "rank score member { externalId displayName activeTitle { name } }"
TOP10 = f'{{ leaderboard(key: "{BOARD}") {{ period entries {{ {ENTRY} }} }} }}'
AROUND = (
    'query($me: String!) { leaderboard(key: "' + BOARD + '", around: $me) '
    f"{{ entries {{ {ENTRY} }} me {{ rank score }} }} }}"
)


async def seed(database_url: str) -> None:
    """Members, their accounts, one grant each (transaction + issuance and member postings)."""
    async with connect(database_url) as conn:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(
            """
            INSERT INTO members (external_id, display_name, referral_code, joined_at)
            SELECT 'lb-' || i, 'Player ' || i, 'L' || lpad(i::text, 10, '0'),
                   now() - interval '30 days'
            FROM generate_series(1, $1) AS i
            """,
            MEMBERS,
        )
        await conn.execute(
            """
            INSERT INTO accounts (key, member_id, currency, kind, allow_negative, balance)
            SELECT 'member:' || m.id || ':points', m.id, 'points', 'available', false,
                   (m.id * 7919) % 100000 + 1
            FROM members m
            """
        )
        await conn.execute(
            """
            INSERT INTO transactions (kind, member_id, idempotency_key, created_at)
            SELECT 'grant', m.id, 'bench:' || m.id,
                   now() - make_interval(secs => (m.id * 104729) % 2000000)
            FROM members m
            """
        )
        await conn.execute(
            """
            INSERT INTO postings (transaction_id, account_id, currency, amount, created_at)
            SELECT t.id, x.account_id, 'points', x.amount, t.created_at
            FROM transactions t
            JOIN accounts a ON a.member_id = t.member_id AND a.currency = 'points'
            CROSS JOIN LATERAL (VALUES
                ((SELECT id FROM accounts WHERE key = 'system:issuance:points'), -a.balance),
                (a.id, a.balance)) x(account_id, amount)
            WHERE t.kind = 'grant'
            """
        )
        await conn.execute(
            """
            INSERT INTO leaderboards (key, name, metric, period)
            VALUES ($1, 'Bench points', 'POINTS_EARNED', 'ALL_TIME')
            """,
            BOARD,
        )
        await conn.execute("VACUUM ANALYZE")


async def rebuild_board(database_url: str, redis_url: str) -> dict[str, float | int]:
    from leaderboards import keys
    from leaderboards.rebuild import rebuild
    from server.runtime import Runtime

    runtime = await Runtime.start(Settings(database_url=database_url, redis_url=redis_url))
    try:
        report = await rebuild(runtime)
        key = keys.board_key(BOARD, 1, "all")
        size = int(await runtime.redis.zcard(key))
        memory = int(await runtime.redis.memory_usage(key, samples=0) or 0)
    finally:
        await runtime.close()
    assert size == MEMBERS, (size, MEMBERS)
    return {
        "rebuild_s": round(report.seconds, 2),
        "rebuild_members_per_s": round(report.members / report.seconds),
        "redis_bytes_per_member": round(memory / size, 1),
        "redis_board_mb": round(memory / 2**20, 1),
    }


async def cleanup(redis_url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch = []
        async for key in client.scan_iter(match=PREFIX + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.unlink(*batch)
                batch = []
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


def main() -> None:
    figures: dict[str, object] = {"members": MEMBERS}
    with scratch_servers("leaderboards") as servers:
        try:
            started = time.perf_counter()
            asyncio.run(seed(servers.database_url))
            figures["seed_s"] = round(time.perf_counter() - started, 1)
            figures.update(asyncio.run(rebuild_board(servers.database_url, servers.redis_url)))
            secret = "bench-secret-" + "x" * 32
            settings = Settings(jwt_secret=secret)
            step = max(1, MEMBERS // 2000)
            around = [
                (
                    issue_token(settings, subject=f"lb-{i}", role="member", ttl_seconds=3600),
                    {"query": AROUND, "variables": {"me": f"lb-{i}"}},
                )
                for i in range(1, MEMBERS + 1, step)
            ]
            top = [(None, {"query": TOP10})]
            # The per-caller rate limit (300/min anonymous) would refuse a load test from one
            # address; it is switched off to measure the boards themselves.
            api_env = {"QUESTLINE_JWT_SECRET": secret, "QUESTLINE_RATE_LIMIT_ENABLED": "false"}
            with running_api(servers, workers=2, **api_env) as base:
                figures.update(calibrate(base, seconds=SECONDS))
                load(base, top, connections=32, seconds=2)  # warm-up
                figures.update(load(base, top, connections=32, seconds=SECONDS).figures("top10"))
                # steady state: every member's view asked for at least once per API process
                load(base, around, connections=32, seconds=6)
                figures.update(
                    load(base, around, connections=32, seconds=SECONDS).figures("around_me")
                )
        finally:
            figures["redis_keys_cleaned"] = asyncio.run(cleanup(servers.redis_url))
    figures["cpus"] = os.cpu_count()
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    emit(figures)


if __name__ == "__main__":
    main()
