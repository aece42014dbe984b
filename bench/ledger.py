"""Ledger benchmark: prints ONE JSON line of figures.

    python bench/ledger.py            # QUESTLINE_DATABASE_URL, else the embedded PostgreSQL

It creates a scratch database on that server (``questline_bench_ledger_<hex>``), migrates it,
measures, and drops it (only that one). The client runs in this same process, on the same
machine as the server, so the Python side of every call is part of each figure.

What is measured (every figure goes through ``ledger.service``, the code the API uses):

- ``grants_per_s_c1`` / ``grants_per_s_c16``: ``service.grant`` out of the single issuance
  account to random members (each grant: one transaction, two postings, one lot, one member
  balance update) by 1 and by 16 concurrent connections. Each worker keeps one connection and
  one ``AsyncSession`` in autocommit mode, so a grant is exactly one round trip and commits on
  its own (a ledger function call is atomic by itself).
- ``transfers_per_s_c16``: ``service.transfer`` of 1 point between random funded members,
  16 connections, same mode (both member rows locked in id order, lots consumed and carried).
- ``settle_lots_per_s``: ``ledger.tasks.run_settle_expirations`` (what the worker runs:
  5,000 lots per statement, one commit per batch) over 100,000 expired lots of 20,000 members.
- ``batch_postings_per_s``: ``service.post_batch`` with 5,000 grants (10,000 postings) per
  call, one round trip and one commit per call, 200,000 postings in all.
- ``batch_postings_per_s_2_importers``: the same calls from two importers at once, each over
  its own half of the members (as a parallel import splits its input): one importer's Python
  prepares its next call while the database writes the other's.
- Before each timed phase the database is vacuumed and analysed (``catch_up``), as
  autovacuum would have done after the phase before; ``server_autovacuum_on`` says whether
  the server runs autovacuum itself (1) or not (0: this machine's does not).
- ``bare_insert_per_s_c16``: calibration, measured in the same run: a one-statement INSERT
  into a two-index scratch table over raw asyncpg, 16 connections. The machine is shared and
  its speed drifts (this figure has ranged from about 6,000 to 15,000 on the same box), so
  read the ledger figures against it.
- ``grant_sql_per_s_c16_pgbench`` / ``transfer_sql_per_s_c16_pgbench``: calibration, the same
  grants and transfers with no Python client at all: ``ledger_grant`` and ``ledger_transfer``
  (the functions the service calls) from ``pgbench``'s 16 connections, when ``pgbench`` is
  installed. The gap to ``grants_per_s_c16`` / ``transfers_per_s_c16`` is what this
  process's own client work (asyncpg, asyncio, the service's checks) takes from the two
  shared CPUs.
- ``*_session_txn``: the same grants and transfers, but each in a fresh ``runtime.transaction()``
  (pool checkout, BEGIN, call, COMMIT: what a request handler does). The gap to the autocommit
  figures is SQLAlchemy's session and pool overhead on the client (hundreds of microseconds of
  Python per operation), not database work; on this 2-core machine the client and the server
  share the CPUs.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bench.harness import connect, emit, scratch_database
from ledger import service
from ledger.tasks import run_settle_expirations
from ledger.types import BatchGrant
from ledger.verify import verify_database_url
from server.db import plain_dsn
from server.embedded import start_embedded_postgres
from server.runtime import Runtime
from server.settings import Settings, get_settings

MEMBERS = 20_000
GRANTS_C1 = 3_000
GRANTS_C16 = 30_000
TRANSFERS_C16 = 30_000
SETTLE_LOTS = 100_000
BATCH_ENTRIES = 5_000
BATCH_CALLS = 20
WARMUP = 300


def database_server() -> str:
    """The configured PostgreSQL server, else the embedded one (Redis is not needed here)."""
    settings = get_settings()
    return settings.database_url or start_embedded_postgres(settings.data_dir)


async def throughput(
    engine: AsyncEngine, workers: int, total: int, op: Callable[[AsyncSession, int], Awaitable[Any]]
) -> float:
    """Operations per second of ``op`` on ``workers`` autocommit connections (after a warm-up
    on each, so prepared statements and plans are cached)."""
    counter = iter(range(total))
    ready = 0
    all_ready, go = asyncio.Event(), asyncio.Event()

    async def worker() -> None:
        nonlocal ready
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            session = AsyncSession(bind=autocommit)
            for _ in range(WARMUP):
                await op(session, -1)
            ready += 1
            if ready == workers:
                all_ready.set()
            await go.wait()
            for n in counter:
                await op(session, n)
            await session.close()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await all_ready.wait()
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return total / (time.perf_counter() - start)


async def throughput_session_txn(
    runtime: Runtime, workers: int, total: int, op: Callable[[AsyncSession, int], Awaitable[Any]]
) -> float:
    """The same with a fresh ``runtime.transaction()`` per operation (a request handler)."""
    counter = iter(range(total))

    async def worker() -> None:
        for n in counter:
            async with runtime.transaction() as session:
                await op(session, n)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return total / (time.perf_counter() - start)


async def bare_inserts(url: str, workers: int = 16, total: int = 30_000) -> float:
    """Calibration: the cheapest possible committed write, over raw asyncpg."""
    conns = [await asyncpg.connect(plain_dsn(url)) for _ in range(workers)]
    try:
        await conns[0].execute(
            "CREATE TABLE bench_bare (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " k text UNIQUE, n bigint)"
        )
        counter = iter(range(total))

        async def worker(conn: Any) -> None:
            for n in counter:
                await conn.execute("INSERT INTO bench_bare (k, n) VALUES ($1, $2)", f"k{n}", n)

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - start
        await conns[0].execute("DROP TABLE bench_bare")
        return total / elapsed
    finally:
        for conn in conns:
            await conn.close()


# pgbench scripts: the ledger functions the service calls, with random members of the run
PGBENCH_GRANT = """\\set m random({low}, {high})
SELECT ledger_grant(:m, 'points', 10, 'grant', NULL, NULL, NULL, gen_random_uuid()::text,
                    NULL, NULL, 365);
"""
PGBENCH_TRANSFER = """\\set a random({low}, {high})
\\set b random({low}, {high} - 1)
SELECT ledger_transfer(:a, CASE WHEN :b >= :a THEN :b + 1 ELSE :b END, 'points', 1, NULL, NULL,
                       NULL, gen_random_uuid()::text, NULL);
"""


def pgbench_rate(url: str, script: str, members: list[int], seconds: int = 8) -> float | None:
    """Calls per second of ``script`` (one of the above) run by pgbench with 16 connections
    and prepared statements: the database's side alone, no Python client. None when pgbench
    is not installed."""
    if shutil.which("pgbench") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
        file.write(script.format(low=min(members), high=max(members)))
        file.flush()
        done = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", "16", "-j", "2", "-T", str(seconds),
             "-f", file.name, plain_dsn(url)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    found = re.search(r"tps = ([0-9.]+)", done.stdout)
    assert found is not None, done.stdout
    return float(found.group(1))


async def autovacuum_on(url: str) -> int:
    async with connect(url) as conn:
        return int(await conn.fetchval("SELECT current_setting('autovacuum') = 'on'"))


async def catch_up(url: str) -> None:
    """VACUUM ANALYZE before a timed phase: what autovacuum does in production after the
    previous phase's writes (dead row versions, fresh statistics). Without it, on a server
    running with autovacuum off (this machine's does), each phase pays for the debris of
    the ones before it: transfers ran at half speed after the grants."""
    async with connect(url) as conn:
        await conn.execute("VACUUM ANALYZE")


async def create_members(url: str) -> list[int]:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO members (external_id, referral_code)"
            " SELECT 'bench-' || g, 'bench-' || g FROM generate_series(1, $1) g",
            MEMBERS,
        )
        return [r[0] for r in await conn.fetch("SELECT id FROM members ORDER BY id")]
    finally:
        await conn.close()


async def fund(runtime: Runtime, members: list[int], amount: int, tag: str) -> None:
    for start in range(0, len(members), BATCH_ENTRIES):
        entries = [
            BatchGrant(m, amount, f"{tag}-{m}") for m in members[start : start + BATCH_ENTRIES]
        ]
        async with runtime.transaction() as session:
            await service.post_batch(session, entries, lifetime_days=365)


async def bench_settlement(runtime: Runtime, url: str, members: list[int]) -> float:
    per_member = SETTLE_LOTS // len(members)
    later = datetime.now(UTC) + timedelta(days=1)
    for round_ in range(per_member):
        for offset in range(0, len(members), BATCH_ENTRIES):
            entries = [
                BatchGrant(m, 5, f"expiring-{round_}-{m}", expires_at=later)
                for m in members[offset : offset + BATCH_ENTRIES]
            ]
            async with runtime.transaction() as session:
                await service.post_batch(session, entries)
    conn = await asyncpg.connect(plain_dsn(url))
    try:  # time passes: these lots are now two days past due
        await conn.execute(
            "UPDATE lots SET expires_at = now() - interval '1 day' WHERE expires_at = $1", later
        )
    finally:
        await conn.close()
    await catch_up(url)
    start = time.perf_counter()
    result = await run_settle_expirations(runtime)
    elapsed = time.perf_counter() - start
    assert result.count == per_member * len(members), result
    return result.count / elapsed


async def bench_batch(runtime: Runtime, members: list[int], importers: int = 1) -> float:
    """Postings per second of ``BATCH_CALLS`` calls of ``post_batch`` from ``importers``
    concurrent importers, each over its own share of the members (as a parallel import
    partitions its input: two importers never wait for each other's account rows)."""
    rng = random.Random(3 + importers)
    shares = [members[i::importers] for i in range(importers)]
    calls = [
        [
            [
                BatchGrant(rng.choice(share), 10, f"import-{importers}-{i}-{call}-{n}")
                for n in range(BATCH_ENTRIES)
            ]
            for call in range(BATCH_CALLS // importers)
        ]
        for i, share in enumerate(shares)
    ]

    async def importer(batches: list[list[BatchGrant]]) -> None:
        for entries in batches:
            async with runtime.transaction() as session:
                await service.post_batch(session, entries, lifetime_days=365)

    start = time.perf_counter()
    await asyncio.gather(*(importer(batches) for batches in calls))
    elapsed = time.perf_counter() - start
    return sum(len(b) for batches in calls for b in batches) * 2 / elapsed


async def measure(url: str) -> dict[str, float]:
    """Every figure, on the migrated scratch database at ``url``."""
    members = await create_members(url)
    # the API's own engine settings (pool pre-ping included); Redis is never contacted
    settings = Settings(database_url=url, redis_url="redis://127.0.0.1:1/0", db_pool_size=20)
    runtime = await Runtime.start(settings)
    engine = runtime.engine
    rng = random.Random(1)
    serial = itertools.count()

    async def grant(session: AsyncSession, n: int) -> None:
        await service.grant(
            session, rng.choice(members), 10, idempotency_key=f"grant-{next(serial)}",
            lifetime_days=365,
        )  # fmt: skip

    async def transfer(session: AsyncSession, n: int) -> None:
        a, b = rng.sample(members, 2)
        await service.transfer(session, a, b, 1, idempotency_key=f"tr-{next(serial)}")

    figures: dict[str, float] = {"server_autovacuum_on": await autovacuum_on(url)}
    figures["bare_insert_per_s_c16"] = await bare_inserts(url)
    # no catch_up before the first phase: statistics taken of an empty ledger would tell the
    # planner the tables stay empty (production's autovacuum re-analyses as they fill)
    figures["grants_per_s_c1"] = await throughput(engine, 1, GRANTS_C1, grant)
    await catch_up(url)
    figures["grants_per_s_c16"] = await throughput(engine, 16, GRANTS_C16, grant)
    await catch_up(url)
    grants_sql = await asyncio.to_thread(pgbench_rate, url, PGBENCH_GRANT, members)
    await fund(runtime, members, 1_000_000, "fund")
    await catch_up(url)
    figures["transfers_per_s_c16"] = await throughput(engine, 16, TRANSFERS_C16, transfer)
    await catch_up(url)
    transfers_sql = await asyncio.to_thread(pgbench_rate, url, PGBENCH_TRANSFER, members)
    if grants_sql is not None and transfers_sql is not None:
        figures["grant_sql_per_s_c16_pgbench"] = grants_sql
        figures["transfer_sql_per_s_c16_pgbench"] = transfers_sql
    await catch_up(url)
    figures["grants_per_s_c16_session_txn"] = await throughput_session_txn(
        runtime, 16, 10_000, grant
    )
    await catch_up(url)
    figures["transfers_per_s_c16_session_txn"] = await throughput_session_txn(
        runtime, 16, 10_000, transfer
    )
    await catch_up(url)
    figures["batch_postings_per_s"] = await bench_batch(runtime, members)
    await catch_up(url)
    figures["batch_postings_per_s_2_importers"] = await bench_batch(runtime, members, 2)
    figures["settle_lots_per_s"] = await bench_settlement(runtime, url, members[:20_000])
    await runtime.close()
    report = await verify_database_url(url)  # not timed: the workload kept every invariant
    assert report.ok, report.render()
    return figures


def main() -> None:
    with scratch_database(database_server(), "ledger") as url:
        figures = asyncio.run(measure(url))
    emit({key: round(value) for key, value in figures.items()})


if __name__ == "__main__":
    main()
