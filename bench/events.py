"""Events benchmark: ``recordEvent`` through GraphQL with 20 active quests.

    python bench/events.py            # QUESTLINE_DATABASE_URL, else the embedded server

20 active quests listen for ``purchase`` events (daily, weekly, monthly and achievements,
with filters and every aggregate), 2,000 members; 32 concurrent clients against 2 API
processes send purchases with fresh idempotency keys. Prints one JSON line: events per
second, p50/p99 latency, errors, how many quest completions the run produced, and
``{ __typename }`` through the same API (``calibration_typename_rps``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import calibrate, connect, emit, load, running_api, scratch_servers
from members.service import register_member
from quests.definitions import QuestInput, upsert_quest
from server.auth import issue_token
from server.runtime import Runtime
from server.settings import Settings

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "2000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
RECORD = """mutation($input: RecordEventInput!) { recordEvent(input: $input) {
  completed { quest { key } } awarded { kind amount } errors { code } } }"""

CADENCES = ("DAILY", "WEEKLY", "MONTHLY", "ONCE")
AGGREGATES = ("COUNT", "SUM", "DISTINCT_DAYS", "STREAK_DAYS")


def quests() -> list[QuestInput]:
    made = []
    for i in range(20):
        aggregate = AGGREGATES[i % 4]
        made.append(
            QuestInput(
                key=f"quest-{i}",
                name=f"Quest {i}",
                cadence=CADENCES[(i // 4) % 4],
                event_type="purchase",
                target=[3, 100, 2, 2][i % 4] * (1 + i // 8),
                rewards=[{"kind": "POINTS", "amount": 10}, {"kind": "XP", "amount": 5}],
                filter={"amount": {"gte": 1}} if i % 3 else {"category": {"in": ["a", "b"]}},
                aggregate=aggregate,
                property="amount" if aggregate == "SUM" else None,
            )
        )
    return made


async def seed(database_url: str, redis_url: str) -> None:
    runtime = await Runtime.start(Settings(database_url=database_url, redis_url=redis_url))
    try:
        async with runtime.transaction() as session:
            for quest in quests():
                await upsert_quest(session, quest)
        async with runtime.transaction() as session:
            for i in range(MEMBERS):
                await register_member(session, external_id=f"bench-{i}")
    finally:
        await runtime.close()


async def completions(database_url: str) -> int:
    async with connect(database_url) as conn:
        return int(
            await conn.fetchval("SELECT count(*) FROM quest_progress WHERE status <> 'IN_PROGRESS'")
        )


def main() -> None:
    with scratch_servers("events") as servers:
        asyncio.run(seed(servers.database_url, servers.redis_url))
        secret = "bench-secret-" + "x" * 32
        admin = issue_token(
            Settings(jwt_secret=secret), subject="bench", role="admin", ttl_seconds=3600
        )
        requests = [
            (
                admin,
                {
                    "query": RECORD,
                    "variables": {
                        "input": {
                            "externalId": f"bench-{i}",
                            "type": "purchase",
                            "idempotencyKey": "__UNIQUE__",
                            "properties": {"amount": 5 + i % 20, "category": "ab"[i % 2]},
                        }
                    },
                },
            )
            for i in range(MEMBERS)
        ]
        with running_api(servers, workers=2, QUESTLINE_JWT_SECRET=secret) as base:
            load(base, requests, connections=32, seconds=2)  # warm-up
            result = load(base, requests, connections=32, seconds=SECONDS)
            calibration = calibrate(base)
        figures: dict[str, object] = {"quests": 20, "members": MEMBERS}
        figures.update(result.figures("events"))
        figures.update(calibration)
        figures["quest_completions"] = asyncio.run(completions(servers.database_url))
        emit(figures)


if __name__ == "__main__":
    main()
