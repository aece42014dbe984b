"""kill -9 a worker in the middle of expiry settlement, run it again: every lot expired once.

The world: ``3.5 × DEFAULT_BATCH_SIZE`` expired lots, thirty per member, each member's lots
next to each other in expiry order. A real ``questline worker`` (on a Redis broker of the
test's own) runs ``ledger.settle_expirations``, which commits one batch at a time.

To crash it at a known point rather than by luck, the test holds a row lock on the account of
one member whose lots fall in the third batch: the worker commits two batches, then blocks
inside the third. That is when the whole worker (the ``questline worker`` supervisor,
Dramatiq's main process and its worker process) gets SIGKILL.

The lock is then released: the dead worker's session finishes its statement but, its client
gone, never commits; PostgreSQL ends it and the batch in flight leaves nothing behind (a crash
loses at most that batch). A new worker then runs the same job again (as the hourly schedule
would). Every lot must end with exactly one ``expire`` transaction keyed ``expire:lot:<id>``,
moving exactly its amount to the expired account; ``ledger verify`` runs after the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import dramatiq
import pytest
from sqlalchemy import insert

from ledger.service import DEFAULT_BATCH_SIZE, post_batch
from ledger.types import BatchGrant
from members.models import Member
from server.broker import build_broker
from server.embedded import EmbeddedRedis
from server.runtime import Runtime
from tests.faults.conftest import (
    Child,
    child_env,
    kill_tree,
    questline_command,
    redis_env,
    start_child,
)
from tests.support import plain_dsn

LOTS_PER_MEMBER = 30
BATCH = DEFAULT_BATCH_SIZE
LOTS = 3 * BATCH + BATCH // 2  # the crash comes in the third batch; a fourth remains
BLOCKED_RANK = 2 * BATCH + BATCH // 2  # a lot in the third batch; its account gets locked
DEADLINE = 60.0


async def seed_expired_lots(runtime: Runtime) -> int:
    """``LOTS`` lots, expired, each member's lots contiguous in expiry order; total amount."""
    members = -(-LOTS // LOTS_PER_MEMBER)
    async with runtime.transaction() as session:
        result = await session.execute(
            insert(Member).returning(Member.id),
            [{"external_id": f"crash-{i}", "referral_code": f"crash-{i}"} for i in range(members)],
        )
        member_ids = [row[0] for row in result]
    later = datetime.now(UTC) + timedelta(hours=1)
    amounts = [1 + i % 7 for i in range(LOTS)]
    async with runtime.transaction() as session:
        await post_batch(
            session,
            [
                BatchGrant(
                    member_ids[i // LOTS_PER_MEMBER], amounts[i], f"crash-{i}", expires_at=later
                )
                for i in range(LOTS)
            ],
        )
    # Time passes: every lot expired a day ago, one millisecond apart, grouped by account.
    async with connect(runtime) as conn:
        await conn.execute(
            """
            UPDATE lots l SET expires_at = now() - interval '1 day' + r.rank * interval '1 ms'
            FROM (SELECT id, row_number() OVER (ORDER BY account_id, id) AS rank FROM lots) r
            WHERE l.id = r.id
            """
        )
    return sum(amounts)


def connect(runtime: Runtime) -> _Connection:
    return _Connection(plain_dsn(runtime.settings.database_url or ""))


class _Connection:
    """``async with connect(runtime) as conn``: a plain asyncpg connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def __aenter__(self) -> asyncpg.Connection:
        self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()


async def expired_so_far(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM transactions WHERE kind = 'expire'"))


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], worker: Child | None = None
) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if worker is not None:
            assert worker.process.poll() is None, f"the worker exited:\n{worker.output()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"\n{worker.output()}" if worker else ""
        )
        await asyncio.sleep(0.05)


def start_worker(workdir: Path, redis_url: str, name: str) -> Child:
    return start_child(
        [
            questline_command(),
            "worker",
            "--processes",
            "1",
            "--threads",
            "1",
            "--shutdown-timeout",
            "5",
        ],
        child_env(**redis_env(redis_url)),
        workdir / f"{name}.log",
    )


def send_settlement(broker: dramatiq.Broker) -> None:
    broker.enqueue(
        dramatiq.Message(
            queue_name="default",
            actor_name="ledger.settle_expirations",
            args=(),
            kwargs={},
            options={},
        )
    )


@pytest.mark.slow
async def test_a_worker_killed_mid_settlement_expires_every_lot_exactly_once(
    runtime: Runtime, own_redis: EmbeddedRedis, workdir: Path
) -> None:
    total = await seed_expired_lots(runtime)
    broker = build_broker(own_redis.url)
    blocker = await asyncpg.connect(plain_dsn(runtime.settings.database_url or ""))
    try:
        async with connect(runtime) as conn:
            # Hold the lock that the third batch will wait for.
            locked_account = await conn.fetchval(
                "SELECT account_id FROM lots ORDER BY expires_at OFFSET $1 LIMIT 1", BLOCKED_RANK
            )
            blocker_tx = blocker.transaction()
            await blocker_tx.start()
            await blocker.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", locked_account)

            first = start_worker(workdir, own_redis.url, "worker-1")
            try:
                await asyncio.to_thread(send_settlement, broker)

                async def stuck_in_third_batch() -> bool:
                    waiting = await conn.fetch(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    return bool(waiting) and await expired_so_far(conn) == 2 * BATCH

                await wait_for(
                    "two committed batches and a blocked third", stuck_in_third_batch, first
                )
                orphans = [
                    r["pid"]
                    for r in await conn.fetch(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ]
                kill_tree(first.process.pid)  # kill -9, the whole worker at once
                assert first.process.wait(5) is not None
            finally:
                first.stop()

            assert await expired_so_far(conn) == 2 * BATCH
            await blocker_tx.rollback()  # the dead worker's statement now gets its lock ...

            async def orphans_gone() -> bool:
                alive = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", orphans
                )
                return int(alive) == 0

            await wait_for("PostgreSQL to end the dead worker's session", orphans_gone)
            # ... but its transaction can never commit: the batch in flight left nothing.
            assert await expired_so_far(conn) == 2 * BATCH

            second = start_worker(workdir, own_redis.url, "worker-2")
            try:
                await asyncio.to_thread(send_settlement, broker)

                async def all_settled() -> bool:
                    due = await conn.fetchval("SELECT count(*) FROM lots WHERE remaining > 0")
                    return int(due) == 0 and await expired_so_far(conn) == LOTS

                await wait_for("the second run to settle the rest", all_settled, second)
            finally:
                second.stop()
            assert second.process.returncode == 0, second.output()

            # Exactly once: one expire transaction per lot, keyed by the lot, moving its amount.
            wrong = await conn.fetch(
                """
                SELECT l.id, l.amount, l.expired, l.remaining,
                       count(t.id) AS expiries, coalesce(sum(p.amount), 0) AS moved
                FROM lots l
                LEFT JOIN transactions t ON t.idempotency_key = 'expire:lot:' || l.id
                LEFT JOIN postings p ON p.transaction_id = t.id AND p.account_id = l.account_id
                GROUP BY l.id
                HAVING count(t.id) <> 1 OR l.remaining <> 0 OR l.expired <> l.amount
                    OR coalesce(sum(p.amount), 0) <> -l.amount
                LIMIT 10
                """
            )
            assert not wrong, [dict(r) for r in wrong]
            assert await expired_so_far(conn) == LOTS
            expired_account_total = await conn.fetchval(
                "SELECT coalesce(sum(p.amount), 0) FROM postings p"
                " JOIN accounts a ON a.id = p.account_id WHERE a.key = 'system:expired:points'"
            )
            assert expired_account_total == total
            members_left = await conn.fetchval(
                "SELECT coalesce(sum(balance), 0) FROM accounts WHERE member_id IS NOT NULL"
            )
            assert members_left == 0
    finally:
        await blocker.close()
        broker.close()
