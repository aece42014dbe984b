"""Redemption benchmark: ``redeem`` through GraphQL, 32 concurrent clients, 2 API processes.

    python bench/redeem.py            # QUESTLINE_DATABASE_URL, else the embedded server

Three runs against a scratch database of ``BENCH_MEMBERS`` members, each with plenty of
points; every request carries a fresh idempotency key (the harness's ``__UNIQUE__``, behind
a per-run prefix so a later run never replays an earlier run's keys):

- ``distinct``: an item without stock; consecutive requests come from different members, so
  requests contend on nothing but the database itself;
- ``hot``: one item with (ample) stock, so every redemption decrements the same row: the
  stock row lock is held for one statement and the commit;
- ``drop``: one item with ``BENCH_DROP_STOCK`` units and far more demand than that, run until
  sold out: redemptions sold plus stock left must equal the stock at the start
  (``drop_consistent``), and ``oversold`` counts redemptions beyond the stock (must be 0).

Then ``ledger verify`` runs over everything. Prints one JSON line. Figures depend on the
machine and on whatever else runs on it (``cpus`` says how many it had; the run's
``calibration_typename_rps``, ``{ __typename }`` through the same API, how fast it was).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import calibrate, connect, emit, load, running_api, scratch_servers
from ledger.service import post_batch
from ledger.types import BatchGrant
from ledger.verify import verify_database_url
from redemptions.catalog import CatalogItemInput, upsert_item
from server.auth import issue_token
from server.runtime import Runtime
from server.settings import Settings

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "2000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
DROP_STOCK = int(os.environ.get("BENCH_DROP_STOCK", "2000"))
DROP_MAX_RUNS = 20
# Two API processes with 32 connections between them need no more than ~20 pooled database
# connections each (the default 20 + 10 overflow per process crowds a shared server).
POOL = {"QUESTLINE_DB_POOL_SIZE": "16", "QUESTLINE_DB_MAX_OVERFLOW": "4"}
POINTS = 1_000_000
REDEEM = """mutation($input: RedeemInput!) { redeem(input: $input) {
  redemption { id status cost } errors { code } } }"""


async def seed(database_url: str, redis_url: str) -> None:
    async with connect(database_url) as conn:
        await conn.execute(
            """
            INSERT INTO members (external_id, referral_code, last_active_at)
            SELECT 'bench-' || i, 'B' || lpad(i::text, 9, '0'), now() - interval '1 day'
            FROM generate_series(1, $1) AS i
            """,
            MEMBERS,
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM members ORDER BY id")]
    runtime = await Runtime.start(Settings(database_url=database_url, redis_url=redis_url))
    try:
        async with runtime.transaction() as session:
            await post_batch(
                session,
                [BatchGrant(member_id, POINTS, f"bench-seed-{member_id}") for member_id in ids],
            )
            for data in (
                CatalogItemInput(key="reward", name="Reward", cost=10),
                CatalogItemInput(key="hot", name="Hot", cost=10, stock=10_000_000, set_stock=True),
                CatalogItemInput(
                    key="drop", name="Drop", cost=10, stock=DROP_STOCK, set_stock=True
                ),
            ):
                await upsert_item(session, data)
    finally:
        await runtime.close()
    async with connect(database_url) as conn:
        await conn.execute("ANALYZE")


def requests(settings: Settings, item: str, run: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (
            issue_token(settings, subject=f"bench-{i}", role="member", ttl_seconds=3600),
            {
                "query": REDEEM,
                "variables": {"input": {"itemKey": item, "idempotencyKey": f"{run}-__UNIQUE__"}},
            },
        )
        for i in range(1, MEMBERS + 1)
    ]


async def item_state(database_url: str, key: str) -> dict[str, int]:
    async with connect(database_url) as conn:
        row = await conn.fetchrow(
            "SELECT i.stock, (SELECT count(*) FROM redemptions r WHERE r.item_id = i.id) AS sold"
            " FROM catalog_items i WHERE i.key = $1",
            key,
        )
        return {"stock": row["stock"], "sold": row["sold"]}


def main() -> None:
    with scratch_servers("redeem") as servers:
        asyncio.run(seed(servers.database_url, servers.redis_url))
        secret = "bench-secret-" + "x" * 32
        settings = Settings(jwt_secret=secret)
        figures: dict[str, Any] = {"members": MEMBERS, "cpus": os.cpu_count()}
        nonce = secrets.token_hex(3)
        with running_api(servers, workers=2, QUESTLINE_JWT_SECRET=secret, **POOL) as base:
            # warm-up: every member's token seen (and verified) once by each API process
            load(base, requests(settings, "reward", f"warm-{nonce}"), connections=32, seconds=6)
            distinct = load(base, requests(settings, "reward", f"d-{nonce}"), seconds=SECONDS)
            figures.update(distinct.figures("distinct"))

            hot_before = asyncio.run(item_state(servers.database_url, "hot"))
            hot = load(base, requests(settings, "hot", f"h-{nonce}"), seconds=SECONDS)
            figures.update(hot.figures("hot"))
            hot_after = asyncio.run(item_state(servers.database_url, "hot"))
            sold = hot_after["sold"] - hot_before["sold"]
            figures["hot_stock_consistent"] = hot_before["stock"] - hot_after["stock"] == sold

            drop_answered = 0
            for _ in range(DROP_MAX_RUNS):  # until sold out: more demand than stock
                drop = load(base, requests(settings, "drop", f"x{_}-{nonce}"), seconds=3)
                drop_answered += drop.requests
                state = asyncio.run(item_state(servers.database_url, "drop"))
                if state["stock"] == 0:
                    break
            figures["drop_stock"] = DROP_STOCK
            figures["drop_answered"] = drop_answered  # within the client timeout
            figures["drop_sold"] = state["sold"]
            figures["drop_stock_left"] = state["stock"]
            figures["drop_consistent"] = state["sold"] + state["stock"] == DROP_STOCK
            figures["oversold"] = max(0, state["sold"] - DROP_STOCK)
            figures.update(calibrate(base))
        report = asyncio.run(verify_database_url(servers.database_url))
        figures["ledger_verified"] = report.ok
        emit(figures)


if __name__ == "__main__":
    main()
