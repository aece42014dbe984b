"""Actors owned by the server itself (diagnostics), named ``system.verb``."""

from __future__ import annotations

from server.broker import actor, worker_runtime

PING_TTL_SECONDS = 300


@actor("system.ping", max_retries=0)
async def ping(key: str, value: str) -> None:
    """Write ``value`` under ``key`` in Redis: proof that a worker consumed a message.

    Used by the end-to-end broker test and handy for checking a deployment
    (send ``system.ping`` and look for the key).
    """
    runtime = await worker_runtime()
    await runtime.redis.set(key, value, ex=PING_TTL_SECONDS)
