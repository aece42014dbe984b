"""Delivery to a real receiver on 127.0.0.1: signed, retried with backoff until it recovers,
each event delivered with a stable id, every attempt logged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from ledger import service as ledger
from members.service import register_member
from server.broker import close_worker_runtime, run_actor
from server.runtime import Runtime
from server.tasks_entry import broker
from tests.webhooks.helpers import (
    SECRET,
    attempts,
    deliveries,
    eventually,
    fast_retries,
    outbox,
    receiving,
    subscribe,
)
from webhooks import delivery
from webhooks.delivery import backoff_seconds, signature_header, verify_signature
from webhooks.tasks import deliver, retry_due


async def _member_with_grants(runtime: Runtime, grants: int) -> int:
    async with runtime.transaction() as session:
        member_id = (await register_member(session, external_id="payee")).member.id
    for n in range(grants):
        async with runtime.transaction() as session:
            await ledger.grant(session, member_id, 10 + n, idempotency_key=f"g{n}")
    return member_id


async def _all_finished(runtime: Runtime) -> bool:
    rows = await deliveries(runtime)
    return bool(rows) and all(r["status"] != "pending" for r in rows)


async def test_a_receiver_that_fails_then_recovers_gets_every_event(runtime: Runtime) -> None:
    fast = fast_retries(runtime)
    with receiving(fail_first=2) as receiver:
        await subscribe(fast, receiver.url, ["member.registered", "points.earned"])
        await _member_with_grants(fast, 3)
        events = await outbox(fast)
        assert len(events) == 4

        async def sweep() -> bool:
            await delivery.deliver_due(fast, schedule_retries=False)
            return await _all_finished(fast)

        await eventually(sweep)
        received = receiver.snapshot()

    rows = await deliveries(fast)
    assert {r["status"] for r in rows} == {"delivered"}
    assert all(r["attempts"] == 3 and r["last_status_code"] == 200 for r in rows)
    # every event arrived three times (two refused, one accepted), always the same bytes
    by_event: dict[str, list[bytes]] = {}
    for request in received:
        by_event.setdefault(request.event_id, []).append(request.body)
    assert set(by_event) == {str(e["id"]) for e in events}
    for bodies in by_event.values():
        assert len(bodies) == 3 and len(set(bodies)) == 1
    for request in received:
        headers = request.headers
        assert verify_signature(SECRET, headers["questline-signature"], request.body)
        assert headers["questline-timestamp"] == headers["questline-signature"][2:12]
        assert request.event["id"] == request.event_id
        assert request.event["type"] == headers["questline-event-type"]
        assert set(request.event) == {"id", "type", "createdAt", "data"}
        assert not verify_signature(
            "another-secret-0123456789", headers["questline-signature"], request.body
        )
    earned = [r.event["data"] for r in received if r.event["type"] == "points.earned"]
    assert sorted({d["amount"] for d in earned}) == [10, 11, 12]
    assert {d["externalId"] for d in earned} == {"payee"}

    log = await attempts(fast)
    assert len(log) == 12
    assert [a["status_code"] for a in log[:3]] == [503, 503, 200]
    assert log[0]["error"] == "HTTP 503: temporarily down" and log[2]["error"] is None


async def test_gives_up_after_the_last_attempt(runtime: Runtime) -> None:
    fast = fast_retries(runtime, webhook_max_attempts=3)
    with receiving(fail_first=100, status_when_failing=500) as receiver:
        await subscribe(fast, receiver.url, ["points.earned"])
        await _member_with_grants(fast, 1)

        async def sweep() -> bool:
            await delivery.deliver_due(fast, schedule_retries=False)
            return await _all_finished(fast)

        await eventually(sweep)
        await delivery.deliver_due(fast, schedule_retries=False)  # nothing more to do
        assert len(receiver.snapshot()) == 3
    (row,) = await deliveries(fast)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("failed", 3, 500)
    assert row["next_attempt_at"] is None and row["delivered_at"] is None


async def test_an_unreachable_endpoint_is_retried_later(runtime: Runtime) -> None:
    slow = fast_retries(runtime, webhook_backoff_seconds=600.0, webhook_backoff_max_seconds=600.0)
    await subscribe(slow, "http://127.0.0.1:9/closed", ["points.earned"])  # discard port
    await _member_with_grants(slow, 1)
    (row,) = await deliveries(slow)
    results = await delivery.deliver(slow, [row["id"]], schedule_retries=False)
    assert len(results) == 1 and results[0].status_code is None
    (row,) = await deliveries(slow)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["last_error"] and "Connect" in row["last_error"]
    wait = (row["next_attempt_at"] - datetime.now(UTC)).total_seconds()
    assert 250 < wait <= 600  # equal jitter: between half and all of the backoff
    assert await delivery.deliver(slow, [row["id"]], schedule_retries=False) == []  # not due


async def test_two_workers_never_attempt_the_same_delivery_at_once(runtime: Runtime) -> None:
    with receiving() as receiver:
        await subscribe(runtime, receiver.url, ["points.earned"])
        await _member_with_grants(runtime, 1)
        (row,) = await deliveries(runtime)
        results = await asyncio.gather(
            *(delivery.deliver(runtime, [row["id"]], schedule_retries=False) for _ in range(4))
        )
        assert sum(len(r) for r in results) == 1
        assert len(receiver.snapshot()) == 1
    (row,) = await deliveries(runtime)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_a_lost_attempt_is_retried_when_its_lease_runs_out(runtime: Runtime) -> None:
    with receiving() as receiver:
        await subscribe(runtime, receiver.url, ["points.earned"])
        await _member_with_grants(runtime, 1)
        (row,) = await deliveries(runtime)
        (claimed,) = await delivery.claim(runtime, [row["id"]])  # then the worker "dies"
        assert await delivery.deliver_due(runtime, schedule_retries=False) == 0  # leased
        async with runtime.transaction() as session:  # time passes: the lease runs out
            await session.execute(
                text("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 s'")
            )
        assert await delivery.deliver_due(runtime, schedule_retries=False) == 1
        assert len(receiver.snapshot()) == 1
    (row,) = await deliveries(runtime)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert claimed.attempt == 1


async def test_an_inactive_endpoint_fails_its_pending_deliveries(runtime: Runtime) -> None:
    with receiving() as receiver:
        await subscribe(runtime, receiver.url, ["points.earned"])
        await _member_with_grants(runtime, 1)
        await subscribe(runtime, receiver.url, ["points.earned"], active=False)
        assert await delivery.deliver_due(runtime, schedule_retries=False) == 1
        assert receiver.snapshot() == []
    (row,) = await deliveries(runtime)
    assert (row["status"], row["last_error"]) == ("failed", "endpoint deactivated")


async def test_actors_deliver_and_sweep(runtime: Runtime) -> None:
    fast = fast_retries(runtime)
    with receiving(fail_first=1) as receiver:
        await subscribe(fast, receiver.url, ["points.earned"])
        await _member_with_grants(fast, 2)
        ids = [r["id"] for r in await deliveries(fast)]
        # the actors use the worker's own Runtime (default settings: long backoff)
        assert await run_actor(deliver, ids) == 2
        async with fast.transaction() as session:
            await session.execute(text("UPDATE webhook_deliveries SET next_attempt_at = now()"))
        assert await run_actor(retry_due) == 2
        assert len(receiver.snapshot()) == 4
    await close_worker_runtime()
    assert {r["status"] for r in await deliveries(fast)} == {"delivered"}


def _queued(actor_name: str) -> list[dict[str, object]]:
    assert isinstance(broker, RedisBroker)
    messages = broker.client.hvals("dramatiq:default.msgs")
    decoded = [json.loads(m) for m in messages]
    return [m for m in decoded if m["actor_name"] == actor_name]


async def test_deliveries_are_sent_to_the_worker_after_commit(runtime: Runtime) -> None:
    await subscribe(runtime, "http://127.0.0.1:9/hooks", ["points.earned"])
    assert _queued("webhooks.deliver") == []
    member_id = await _member_with_grants(runtime, 0)
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, 5, idempotency_key="a")
        await ledger.grant(session, member_id, 6, idempotency_key="b")
        assert _queued("webhooks.deliver") == []  # nothing before the commit
    (message,) = _queued("webhooks.deliver")
    ids = sorted(r["id"] for r in await deliveries(runtime))
    assert sorted(message["args"][0]) == ids  # type: ignore[index]


def test_backoff_grows_exponentially_with_jitter() -> None:
    assert backoff_seconds(1, 30, 3600, rand=lambda: 0.0) == 15
    assert backoff_seconds(1, 30, 3600, rand=lambda: 1.0) == 30
    assert backoff_seconds(4, 30, 3600, rand=lambda: 1.0) == 240
    assert backoff_seconds(20, 30, 3600, rand=lambda: 1.0) == 3600  # capped
    waits = {backoff_seconds(3, 30, 3600) for _ in range(20)}
    assert len(waits) > 1 and all(60 <= w <= 120 for w in waits)


def test_signatures_reject_tampering_and_old_timestamps() -> None:
    body = '{"id":"1"}'
    now = int(time.time())
    header = signature_header(SECRET, now, body)
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, body + " ")
    assert not verify_signature(SECRET, header.replace(f"t={now}", f"t={now - 1}"), body)
    assert not verify_signature(SECRET, signature_header(SECRET, now - 3600, body), body)
    assert not verify_signature(SECRET, "garbage", body)


def test_every_webhook_actor_is_registered() -> None:
    from server.scheduler import PERIODIC_JOBS

    names = {
        "webhooks.deliver",
        "webhooks.retry_due",
        "webhooks.announce_expiring",
        "webhooks.prune",
    }
    assert names <= set(broker.actors)
    assert {"webhooks.retry_due", "webhooks.announce_expiring", "webhooks.prune"} <= {
        job.actor_name for job in PERIODIC_JOBS
    }
    assert isinstance(dramatiq.get_broker(), RedisBroker)


@pytest.mark.slow
async def test_end_to_end_through_a_worker_process(runtime: Runtime, api: Any) -> None:
    """A grant through the API; ``webhooks.deliver`` sent after its commit; a real
    ``questline worker`` delivers it, retrying once (a delayed message) after a 503."""
    env = {
        **os.environ,
        "QUESTLINE_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "QUESTLINE_WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
    }
    questline = Path(sys.executable).parent / "questline"
    with receiving(fail_first=1) as receiver:
        await subscribe(runtime, receiver.url, ["points.earned"])
        await api.register("e2e")
        granted = await api.admin(
            """mutation { grantPoints(input: {externalId: "e2e", amount: 42, reason: "test",
                 idempotencyKey: "e2e-1"}) { errors { code } } }"""
        )
        assert granted.data["grantPoints"]["errors"] == []
        worker = await asyncio.create_subprocess_exec(
            str(questline),
            "worker",
            "--processes",
            "1",
            "--threads",
            "2",
            "--shutdown-timeout",
            "5",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await eventually(lambda: _all_finished(runtime), within=60, step=0.2)
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.communicate(), 60)
            except TimeoutError:
                os.killpg(worker.pid, signal.SIGKILL)
                await worker.communicate()
        received = receiver.snapshot()
    assert [r.status for r in received] == [503, 200]
    assert received[0].body == received[1].body
    assert received[1].event["data"]["amount"] == 42
    (row,) = await deliveries(runtime)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


async def test_prune_keeps_what_is_pending(runtime: Runtime) -> None:
    from webhooks.tasks import run_prune

    await subscribe(runtime, "http://127.0.0.1:9/hooks", ["points.earned"])
    await _member_with_grants(runtime, 3)
    first, second, third = [r["id"] for r in await deliveries(runtime)]
    async with runtime.transaction() as session:
        await session.execute(
            text(
                "UPDATE webhook_deliveries SET status = CASE id WHEN :a THEN 'delivered'"
                " WHEN :b THEN 'failed' ELSE 'pending' END"
            ),
            {"a": first, "b": second},
        )
        await session.execute(
            text("UPDATE webhook_events SET created_at = now() - interval '40 days'")
        )
    assert await run_prune(runtime, datetime.now(UTC), batch_size=1) == 2
    assert [r["id"] for r in await deliveries(runtime)] == [third]  # still to be delivered
    assert len(await outbox(runtime)) == 1
