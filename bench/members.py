"""Members benchmark: the daily jobs over 100,000 members, and ``me`` through GraphQL.

    python bench/members.py            # QUESTLINE_DATABASE_URL, else the embedded server

Prints one JSON line: seconds for ``members.evaluate_tiers`` and ``members.scan_inactivity``
over ``members`` members (every member due for retention, set-based batches), and the
requests per second and latency of ``me { tier tierProgress lifecycleStage }`` with 32
concurrent clients against 2 API processes, and ``{ __typename }`` through the same API
(``calibration_typename_rps``: read the other figures against it).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import calibrate, connect, emit, load, running_api, scratch_servers
from members.tasks import run_evaluate_tiers, run_scan_inactivity
from server.auth import issue_token
from server.runtime import Runtime
from server.settings import Settings

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "100000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ME_QUERY = """{ me { externalId displayName tier { key name } lifecycleStage
  tierProgress { xpNeeded next { key } } balance pendingBalance xp: balance(currency: "xp") } }"""


async def seed(database_url: str) -> None:
    """Three tiers and ``MEMBERS`` members, all at the middle tier with an ended window."""
    async with connect(database_url) as conn:
        await conn.execute(
            """
            INSERT INTO tiers (key, name, rank, xp_threshold, retention_xp, window_days)
            VALUES ('member', 'Member', 0, 0, NULL, 365),
                   ('silver', 'Silver', 1, 500, 300, 365),
                   ('gold', 'Gold', 2, 2000, 1500, 365)
            """
        )
        await conn.execute(
            """
            INSERT INTO members (external_id, display_name, referral_code, joined_at,
                                 last_active_at, tier_id, tier_since)
            SELECT 'bench-' || i, 'Bench ' || i, 'B' || lpad(i::text, 9, '0'),
                   now() - make_interval(days => 400 + i % 30),
                   now() - make_interval(days => i % 90),
                   (SELECT id FROM tiers WHERE key = 'silver'),
                   now() - make_interval(days => 366)
            FROM generate_series(1, $1) AS i
            """,
            MEMBERS,
        )
        await conn.execute("ANALYZE")


async def time_jobs(database_url: str, redis_url: str) -> dict[str, float]:
    runtime = await Runtime.start(Settings(database_url=database_url, redis_url=redis_url))
    try:
        now = datetime.now(UTC) + timedelta(minutes=1)
        started = time.perf_counter()
        tiers = await run_evaluate_tiers(runtime, now)
        tiers_seconds = time.perf_counter() - started
        started = time.perf_counter()
        changed = await run_scan_inactivity(runtime, now)
        scan_seconds = time.perf_counter() - started
    finally:
        await runtime.close()
    assert tiers["handled"] == MEMBERS, tiers
    assert changed == MEMBERS, changed
    return {
        "evaluate_tiers_s": round(tiers_seconds, 2),
        "scan_inactivity_s": round(scan_seconds, 2),
    }


def main() -> None:
    with scratch_servers("members") as servers:
        asyncio.run(seed(servers.database_url))
        figures: dict[str, object] = {"members": MEMBERS}
        figures.update(asyncio.run(time_jobs(servers.database_url, servers.redis_url)))
        secret = "bench-secret-" + "x" * 32
        settings = Settings(jwt_secret=secret)
        requests = [
            (
                issue_token(settings, subject=f"bench-{i}", role="member", ttl_seconds=3600),
                {"query": ME_QUERY},
            )
            for i in range(1, 2001)
        ]
        with running_api(servers, workers=2, QUESTLINE_JWT_SECRET=secret) as base:
            # warm-up: every member's token seen (and verified) once by each API process
            load(base, requests, connections=32, seconds=6)
            figures.update(load(base, requests, connections=32, seconds=SECONDS).figures("me"))
            figures.update(calibrate(base))
        emit(figures)


if __name__ == "__main__":
    main()
