"""Live updates across API processes: Redis pub/sub, fanned out to local subscribers.

Whatever process commits a change (an API process, a worker, a CLI command) publishes a
small JSON message after the commit (``updates.py``), on

* ``<prefix>live:member:<id>`` — ``{"kind": "credit", currency, amount, transactionId, at}``
  or ``{"kind": "event", eventId, type, completed: [progress ids], at}``;
* ``<prefix>live:board:<key>`` — ``{"period": "<period id>"}``: the board changed.

Each API process keeps ONE pub/sub connection (``LiveHub``), subscribed to exactly the
channels its WebSocket clients listen to; a reader task hands every message to the local
subscribers' queues. Pub/sub is fire-and-forget: a client that needs certainty re-reads
(``me``, ``leaderboard``) after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub

log = structlog.get_logger("questline.live")

QUEUE_SIZE = 256


class LiveHub:
    """One process's pub/sub connection and its local subscribers."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pubsub: PubSub | None = None
        self._queues: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving every message published on ``channel`` while inside."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        async with self._lock:
            if not self._queues.get(channel):
                if self._pubsub is None:
                    self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(channel)
            self._queues[channel].add(queue)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="questline-live-reader")
        try:
            yield queue
        finally:
            async with self._lock:
                listeners = self._queues.get(channel)
                if listeners is not None:
                    listeners.discard(queue)
                    if not listeners:
                        del self._queues[channel]
                        if self._pubsub is not None:
                            with contextlib.suppress(Exception):
                                await self._pubsub.unsubscribe(channel)

    @property
    def channels(self) -> list[str]:
        return sorted(self._queues)

    async def _read(self) -> None:
        failures = 0
        while True:
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis went away: retry; redis-py resubscribes
                failures += 1
                if failures == 1:
                    log.warning("live updates: pub/sub connection lost", error=str(error))
                await asyncio.sleep(min(5.0, 0.2 * failures))
                continue
            if message is None or message.get("type") != "message":
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        listeners = self._queues.get(channel)
        if not listeners:
            return
        try:
            data = json.loads(message["data"])
        except ValueError:
            log.warning("live updates: unreadable message", channel=channel)
            return
        for queue in list(listeners):
            if queue.full():  # a slow client loses its oldest update, never blocks the others
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(data)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        self._queues.clear()


_hubs: dict[int, LiveHub] = {}


def hub_for(redis: aioredis.Redis) -> LiveHub:
    """The hub of this Redis client (one per process and client)."""
    hub = _hubs.get(id(redis))
    if hub is None or hub.redis is not redis:
        hub = _hubs[id(redis)] = LiveHub(redis)
    return hub


async def close_hubs() -> None:
    hubs = list(_hubs.values())
    _hubs.clear()
    for hub in hubs:
        await hub.close()


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), default=str)
