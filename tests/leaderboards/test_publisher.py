"""Live messages published together: the messages of one turn of the event loop share one
Redis round trip, every caller waits for its own to be sent and sees its failure."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from leaderboards import store
from server.runtime import Runtime


async def test_messages_of_one_turn_share_one_round_trip(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = [f"test:publisher:{n}" for n in range(3)]
    listener = runtime.redis.pubsub(ignore_subscribe_messages=True)
    await listener.subscribe(*channels)
    sent: list[int] = []
    execute = Pipeline.execute

    async def counting(self: Pipeline, raise_on_error: bool = True) -> list[object]:
        sent.append(len(self.command_stack))
        return await execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", counting)
    publisher = store.publisher(runtime.redis)
    await asyncio.gather(
        *(publisher.publish([(c, json.dumps({"n": n}))]) for n, c in enumerate(channels))
    )
    assert sent == [3]  # one pipeline carried the three callers' messages
    received: dict[str, object] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(received) < 3 and loop.time() < deadline:
        # None also stands for a swallowed subscribe confirmation: keep reading
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else channel
            received[name] = json.loads(message["data"])
    assert received == {c: {"n": n} for n, c in enumerate(channels)}
    # a caller alone sends at once, without a pipeline
    await publisher.publish([(channels[0], "{}")])
    assert sent == [3]
    await listener.aclose()


async def test_every_caller_sees_the_failure_of_its_round_trip() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    publisher = store.publisher(client)
    outcomes = await asyncio.gather(
        publisher.publish([("test:a", "{}")]),
        publisher.publish([("test:b", "{}")]),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [RedisConnectionError, RedisConnectionError]
    # and the next message gets a round trip of its own
    with pytest.raises(RedisConnectionError):
        await publisher.publish([("test:c", "{}")])
    await client.aclose()
