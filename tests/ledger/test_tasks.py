"""The ledger's Dramatiq actors: called directly, and once through a real worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from ledger import service, tasks
from server.broker import broker, close_worker_runtime, run_actor
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, advance_clock, create_members, run


async def test_actors_settle_and_vest(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 9, idempotency_key="g", lifetime_days=1))
    await run(
        runtime, lambda s: service.credit_pending(s, member, 4, idempotency_key="p", pending_days=1)
    )
    await advance_clock(runtime, 2)
    try:
        vested = await run_actor(tasks.vest_pending)
        expired = await run_actor(tasks.settle_expirations, datetime.now(UTC).isoformat())
        again = await run_actor(tasks.settle_expirations)
    finally:
        await close_worker_runtime()
    assert vested == {"credits": 1, "points": 4, "batches": 1}
    assert expired == {"lots": 1, "points": 9, "batches": 1}
    assert again["lots"] == 0
    async with runtime.transaction() as session:
        assert (await service.balances(session, member)).available == 4


async def test_runner_commits_batch_by_batch(runtime: Runtime) -> None:
    members = await create_members(runtime, 5)
    for m in members:
        await run(
            runtime,
            partial(service.grant, member_id=m, amount=2, idempotency_key=f"g{m}", lifetime_days=1),
        )
    await advance_clock(runtime, 2)
    result = await tasks.run_settle_expirations(runtime, batch_size=2)
    assert (result.count, result.amount, result.batches) == (5, 10, 3)
    future = datetime.now(UTC) + timedelta(days=1)
    assert (await tasks.run_vest_pending(runtime, future)).count == 0


@pytest.mark.slow
async def test_settlement_through_a_worker_process(runtime: Runtime) -> None:
    """``questline worker`` consumes ``ledger.settle_expirations`` sent through Redis."""
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 5, idempotency_key="g", lifetime_days=1))
    await advance_clock(runtime, 2)
    questline = Path(sys.executable).parent / "questline"
    worker = await asyncio.create_subprocess_exec(
        str(questline), "worker", "--processes", "1", "--threads", "1",
        "--shutdown-timeout", "5",
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        await asyncio.to_thread(broker.enqueue, tasks.settle_expirations.message())
        deadline = time.monotonic() + 60
        while await account_balance(runtime, "system:expired:points") != 5:
            assert worker.returncode is None, "the worker exited early"
            assert time.monotonic() < deadline, "the worker never settled"
            await asyncio.sleep(0.2)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.communicate(), 60)
        except TimeoutError:
            os.killpg(worker.pid, signal.SIGKILL)
            await worker.communicate()
