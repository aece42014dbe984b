"""End-to-end load: a mix of member reads, check-ins, events and redemptions at once.

    python bench/load.py              # QUESTLINE_DATABASE_URL / QUESTLINE_REDIS_URL, else embedded

The API runs as ``questline serve --workers BENCH_API_WORKERS`` against real PostgreSQL and
Redis, on a scratch database (dropped afterwards) holding ``BENCH_MEMBERS`` members with
points, one catalogue item, a daily quest on purchases and an all-time points leaderboard (so
every write also updates Redis after its commit). Then four operations run AT THE SAME TIME for
``BENCH_SECONDS``, each from its own ``wrk`` process with ``BENCH_CONNECTIONS`` connections:

- ``me``: a member token reads ``me { balance tier { name } }``;
- ``check_in``: ``checkIn`` by a member token, each member once (fresh members every request);
- ``record_event``: ``recordEvent`` of a purchase by an ``events`` API key, spread over 500
  members so that their daily quest (three purchases) completes often and grants points;
- ``redeem``: ``redeem`` of the item by a member token, a fresh idempotency key each time.

Prints ONE JSON line: per operation requests per second, p50/p95/p99 latency in ms, errors
(HTTP status other than 200, or any error in the GraphQL answer, payload errors included) and
the first error seen; then totals and ``ledger verify`` on the scratch database. Latency is
measured by wrk on the same machine as the API and the databases: on a small or busy machine
the load generator and the servers compete for the same CPUs (``cpus`` and ``loadavg_before``
say how much there was to share).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LoadResult,
    Request,
    Servers,
    connect,
    emit,
    load,
    running_api,
    scratch_servers,
)
from ledger.service import post_batch
from ledger.types import BatchGrant
from ledger.verify import verify_database_url
from server.auth import create_api_key, issue_token
from server.runtime import Runtime
from server.settings import Settings

SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
MEMBERS = int(os.environ.get("BENCH_MEMBERS", "20000"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))  # per operation
API_WORKERS = int(os.environ.get("BENCH_API_WORKERS", str(max(2, os.cpu_count() or 2))))
EVENT_MEMBERS = 500  # purchases come from these members, so the daily quest often completes
WARM_UP_SECONDS = 3
WARM_UP_MEMBERS = 1000  # check-ins of the warm-up use these; the measured run the others
POINTS = 1_000_000
SECRET = "bench-secret-" + "y" * 32

ME = "{ me { balance tier { name } } }"
CHECK_IN = "mutation { checkIn { streak { current } awarded { amount } errors { code } } }"
RECORD = """mutation($input: RecordEventInput!) { recordEvent(input: $input) {
  event { id } completed { quest { key } } errors { code } } }"""
REDEEM = """mutation($input: RedeemInput!) { redeem(input: $input) {
  redemption { id } errors { code } } }"""


def run_op(base: str, requests: Sequence[Request], connections: int, seconds: int) -> LoadResult:
    """One operation's load: a single wrk thread, so its body list is walked once, in order."""
    return load(base, requests, connections=connections, seconds=seconds, threads=1, timeout_s=10)


# ---- the world ----------------------------------------------------------------------------------


async def seed(servers: Servers) -> str:
    """Members with points (bulk), and an events API key; returns the key."""
    async with connect(servers.database_url) as conn:
        await conn.execute(
            """
            INSERT INTO members (external_id, referral_code, last_active_at)
            SELECT 'load-' || i, 'L' || lpad(i::text, 9, '0'), now() - interval '1 day'
            FROM generate_series(0, $1 - 1) AS i
            """,
            MEMBERS,
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM members ORDER BY id")]
    settings = Settings(database_url=servers.database_url, redis_url=servers.redis_url)
    runtime = await Runtime.start(settings)
    try:
        async with runtime.transaction() as session:
            await post_batch(session, [BatchGrant(i, POINTS, f"load-seed-{i}") for i in ids])
        async with runtime.transaction() as session:
            events_key = await create_api_key(session, name="load-bench", scope="events")
    finally:
        await runtime.close()
    async with connect(servers.database_url) as conn:
        await conn.execute("ANALYZE")
    return events_key


CURATION: list[tuple[str, dict[str, Any]]] = [
    (
        "mutation($i: UpsertCatalogItemInput!) {"
        " upsertCatalogItem(input: $i) { errors { code } } }",
        {"i": {"key": "reward", "name": "Reward", "cost": 10, "kind": "REWARD", "visible": True}},
    ),
    (
        "mutation($i: UpsertQuestInput!) { upsertQuest(input: $i) { errors { code } } }",
        {
            "i": {
                "key": "three-purchases",
                "name": "Three purchases a day",
                "cadence": "DAILY",
                "eventType": "purchase",
                "target": 3,
                "rewards": [{"kind": "POINTS", "amount": 10}, {"kind": "XP", "amount": 5}],
                "aggregate": "COUNT",
                "autoClaim": True,
                "active": True,
            }
        },
    ),
    (
        "mutation($i: UpsertLeaderboardInput!) {"
        " upsertLeaderboard(input: $i) { errors { code } } }",
        {
            "i": {
                "key": "points",
                "name": "Points earned",
                "metric": "POINTS_EARNED",
                "period": "ALL_TIME",
                "active": True,
            }
        },
    ),
]


def curate(base: str, admin: str) -> list[str]:
    """The program, through the API as an admin would set it up; what the schema lacks is
    skipped (and named in the output)."""
    skipped = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for query, variables in CURATION:
            body = http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {admin}"},
            ).json()
            if body.get("errors"):
                skipped.append(
                    query.split("(")[1].split(":")[0].strip("$ ")
                    + ": "
                    + body["errors"][0]["message"][:80]
                )
                continue
            payload = next(iter(body["data"].values()))
            if payload["errors"]:
                raise RuntimeError(f"curation failed: {payload['errors']}")
    return skipped


def member_token(settings: Settings, i: int) -> str:
    return issue_token(settings, subject=f"load-{i}", role="member", ttl_seconds=3600)


def workloads(
    settings: Settings, events_key: str, check_in_members: range, run: str
) -> dict[str, list[Request]]:
    tokens = {i: member_token(settings, i) for i in range(MEMBERS)}
    everyone = range(MEMBERS)
    shoppers = range(min(MEMBERS, EVENT_MEMBERS))  # several purchases each: quests complete
    return {
        "me": [(tokens[i], {"query": ME}) for i in everyone],
        "check_in": [(tokens[i], {"query": CHECK_IN}) for i in check_in_members],
        "record_event": [
            (
                events_key,
                {
                    "query": RECORD,
                    "variables": {
                        "input": {
                            "externalId": f"load-{i}",
                            "type": "purchase",
                            "properties": {"amount": 5 + i % 20},
                            "idempotencyKey": f"{run}-e-__UNIQUE__",
                        }
                    },
                },
            )
            for i in shoppers
        ],
        "redeem": [
            (
                tokens[i],
                {
                    "query": REDEEM,
                    "variables": {
                        "input": {
                            "itemKey": "reward",
                            "quantity": 1,
                            "idempotencyKey": f"{run}-r-__UNIQUE__",
                        }
                    },
                },
            )
            for i in reversed(everyone)  # other members than the check-ins at the same moment
        ],
    }


def run_mix(base: str, mix: dict[str, list[Request]], seconds: int) -> dict[str, LoadResult]:
    """Every operation at once, each from its own load generator."""
    with ThreadPoolExecutor(len(mix)) as pool:
        futures = {
            name: pool.submit(run_op, base, reqs, CONNECTIONS, seconds)
            for name, reqs in mix.items()
        }
        return {name: future.result() for name, future in futures.items()}


async def counts(database_url: str) -> dict[str, int]:
    async with connect(database_url) as conn:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM redemptions) AS redemptions,
                      (SELECT count(*) FROM events) AS events,
                      (SELECT count(*) FROM quest_progress WHERE status <> 'IN_PROGRESS')
                          AS quest_completions,
                      (SELECT count(*) FROM transactions) AS transactions"""
        )
        return dict(row)


async def forget_keys(redis_url: str, key_prefix: str) -> None:
    """Delete this run's leaderboard keys (the Redis may be shared)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


def main() -> None:
    if MEMBERS <= WARM_UP_MEMBERS * 2:
        raise SystemExit(f"BENCH_MEMBERS must be above {WARM_UP_MEMBERS * 2}")
    settings = Settings(jwt_secret=SECRET)
    admin = issue_token(settings, subject="load-bench", role="admin", ttl_seconds=3600)
    loadavg_before = os.getloadavg()[0]
    with scratch_servers("load") as servers:
        events_key = asyncio.run(seed(servers))
        nonce = secrets.token_hex(3)
        board_prefix = f"ql:lb:bench-load-{nonce}:"  # this run's leaderboard keys only
        with running_api(
            servers,
            workers=API_WORKERS,
            QUESTLINE_JWT_SECRET=SECRET,
            QUESTLINE_LEADERBOARD_PREFIX=board_prefix,
        ) as base:
            skipped = curate(base, admin)
            warm = workloads(settings, events_key, range(WARM_UP_MEMBERS), f"w{nonce}")
            run_mix(base, warm, WARM_UP_SECONDS)
            before = asyncio.run(counts(servers.database_url))
            mix = workloads(settings, events_key, range(WARM_UP_MEMBERS, MEMBERS), f"m{nonce}")
            results = run_mix(base, mix, SECONDS)
            loadavg_during = os.getloadavg()[0]  # 1-minute average, mostly this run
            after = asyncio.run(counts(servers.database_url))
        report = asyncio.run(verify_database_url(servers.database_url))
        asyncio.run(forget_keys(servers.redis_url, board_prefix))
    operations = {name: result.summary() for name, result in results.items()}
    check_ins = results["check_in"].requests
    figures: dict[str, Any] = {
        "bench": "load",
        "seconds": SECONDS,
        "api_workers": API_WORKERS,
        "connections_per_operation": CONNECTIONS,
        "members": MEMBERS,
        "load_generator": "wrk" if shutil.which("wrk") else "python",
        "cpus": os.cpu_count(),
        "loadavg_before": round(loadavg_before, 2),
        "loadavg_end": round(loadavg_during, 2),
        "operations": operations,
        "total_rps": round(sum(op["rps"] for op in operations.values()), 1),
        "total_errors": sum(op["errors"] for op in operations.values()),
        "check_in_members_left": max(0, MEMBERS - WARM_UP_MEMBERS - check_ins),
        "written": {k: after[k] - before[k] for k in after},
        "ledger_verified": report.ok,
    }
    if skipped:
        figures["curation_skipped"] = skipped
    emit(figures)


if __name__ == "__main__":
    main()
