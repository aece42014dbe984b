"""The Dramatiq wiring: broker choice, actor conventions, after-commit sends, and one message
end to end through the real broker and a real ``questline worker`` process."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from server.broker import (
    BrokerNotConfigured,
    UnconfiguredBroker,
    actor,
    build_broker,
    close_worker_runtime,
    run_actor,
    send,
    send_after_commit,
)
from server.runtime import Runtime
from server.tasks import ping
from server.tasks_entry import LOADED_MODULES, broker

QUEUE_MESSAGES = "dramatiq:default.msgs"  # where the Redis broker keeps queued messages


def queued_messages() -> int:
    assert isinstance(broker, RedisBroker)
    return int(broker.client.hlen(QUEUE_MESSAGES))


def test_broker_follows_the_url_scheme() -> None:
    assert isinstance(build_broker("redis://127.0.0.1:6379/15"), RedisBroker)
    assert isinstance(build_broker("unix:///tmp/questline-test/redis.sock"), RedisBroker)
    assert isinstance(build_broker("amqp://guest:guest@127.0.0.1:5672/"), RabbitmqBroker)
    with pytest.raises(ValueError, match="unsupported broker URL"):
        build_broker("http://example.com")


def test_every_broker_runs_async_actors() -> None:
    for url in ("redis://127.0.0.1:6379/15", "amqp://guest:guest@127.0.0.1:5672/"):
        assert any(isinstance(m, AsyncIO) for m in build_broker(url).middleware)


def test_without_a_url_sending_fails_clearly() -> None:
    placeholder = build_broker(None)
    assert isinstance(placeholder, UnconfiguredBroker)
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name="default", actor_name="system.ping", args=(), kwargs={}, options={}
    )
    with pytest.raises(BrokerNotConfigured, match="QUESTLINE_BROKER_URL"):
        placeholder.enqueue(message)


def test_the_global_broker_is_the_configured_one() -> None:
    assert dramatiq.get_broker() is broker
    assert isinstance(broker, RedisBroker)  # the tests' QUESTLINE_BROKER_URL is redis://
    assert "server.tasks" in LOADED_MODULES
    assert "system.ping" in broker.actors


def test_actor_names_are_domain_dot_verb() -> None:
    for bad in ("ping", "System.ping", "system.", "system.ping.again", "system-ping"):
        with pytest.raises(ValueError, match=r"domain\.verb"):
            actor(bad)
    for name in broker.actors:
        assert "." in name, f"actor {name!r} is not named domain.verb"


async def test_an_actor_can_be_called_directly(runtime: Runtime) -> None:
    key = f"test:ping:{secrets.token_hex(4)}"
    await run_actor(ping, key, "direct")
    await close_worker_runtime()
    assert await runtime.redis.get(key) == b"direct"


async def test_send_after_commit_waits_for_the_commit(runtime: Runtime) -> None:
    before = queued_messages()
    async with runtime.transaction() as session:
        send_after_commit(session, ping.message("test:after-commit", "1"))
        assert queued_messages() == before  # nothing leaves before the commit
    assert queued_messages() == before + 1


async def test_send_after_commit_drops_the_message_on_rollback(runtime: Runtime) -> None:
    before = queued_messages()
    with pytest.raises(RuntimeError, match="boom"):
        async with runtime.transaction() as session:
            send_after_commit(session, ping.message("test:rolled-back", "1"))
            raise RuntimeError("boom")
    assert queued_messages() == before


async def test_send_does_not_block_the_event_loop(runtime: Runtime) -> None:
    before = queued_messages()
    await asyncio.gather(*(send(ping, f"test:many:{i}", "1") for i in range(5)))
    assert queued_messages() == before + 5


AMQP_URL = os.environ.get("QUESTLINE_TEST_AMQP_URL")  # .ci/run points it at RabbitMQ


async def roundtrip_through_a_worker(
    runtime: Runtime, env: dict[str, str], enqueue: Callable[[dramatiq.Message[Any]], object]
) -> None:
    """Start ``questline worker`` with ``env``, enqueue ``system.ping``, wait for its effect."""
    questline = Path(sys.executable).parent / "questline"
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
    output = b""
    try:
        key, value = f"test:e2e:{secrets.token_hex(4)}", secrets.token_hex(8)
        await asyncio.to_thread(enqueue, ping.message(key, value))
        deadline = time.monotonic() + 60
        while await runtime.redis.get(key) is None:
            assert worker.returncode is None, "the worker exited early"
            assert time.monotonic() < deadline, "the worker never ran system.ping"
            await asyncio.sleep(0.2)
        assert await runtime.redis.get(key) == value.encode()
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)  # a clean stop, as a process manager does
        try:
            output, _ = await asyncio.wait_for(worker.communicate(), 60)
        except TimeoutError:
            os.killpg(worker.pid, signal.SIGKILL)
            output, _ = await worker.communicate()
    text = output.decode(errors="replace")
    assert worker.returncode == 0, text
    assert text.splitlines()[0].startswith("Questline: using the configured"), text


@pytest.mark.slow
async def test_a_worker_process_runs_a_message_end_to_end(runtime: Runtime) -> None:
    """``questline worker`` on the test Redis consumes ``system.ping`` sent from here."""
    await roundtrip_through_a_worker(runtime, dict(os.environ), broker.enqueue)


@pytest.mark.slow
@pytest.mark.skipif(AMQP_URL is None, reason="QUESTLINE_TEST_AMQP_URL is not set")
async def test_a_worker_on_rabbitmq_runs_a_message_end_to_end(runtime: Runtime) -> None:
    """The same through RabbitMQ (``QUESTLINE_BROKER_URL=amqp://...``)."""
    assert AMQP_URL is not None
    rabbit = build_broker(AMQP_URL)
    try:
        env = {**os.environ, "QUESTLINE_BROKER_URL": AMQP_URL}
        await roundtrip_through_a_worker(runtime, env, rabbit.enqueue)
    finally:
        rabbit.close()
