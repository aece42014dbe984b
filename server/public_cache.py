"""Whole responses to anonymous reads of public data, kept a fraction of a second per process.

A public board's top ten is the same for every visitor and is read far more often than it
changes; its rows and faces are already cached (``leaderboards.service``, ``schema.leaderboards``),
so what is left per request is GraphQL itself: parsing, executing and serialising some sixty
fields, about 0.35 ms of CPU. This cache keeps the finished JSON instead, the way a CDN or
Apollo's full-response cache would, with the same freshness bound as the data it was built from.

The rule, applied by ``schema.extensions.RequestPolicy`` after execution:
- the caller sent no credentials (an anonymous POST), the operation is a query, and it ended
  without errors;
- every field at the root of the operation is registered here as public, with a maximum age;
  the response is kept for the smallest of those ages.
The key is the request body, byte for byte (query, variables and operation name).
``forget()`` drops everything (a board updated by this process).

When a kept response expires under load, many identical requests miss at once; only the first
(``leading``) runs GraphQL, the others wait for its answer (``wait_for``) instead of each
building the same response: no stampede every 250 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from server.cache import TTLCache

# The largest request body looked up here (a public read is a short query).
MAX_KEY_BYTES = 4096

# Root field -> seconds its anonymous result may be served again, registered by the module
# that owns the field (see ``schema.leaderboards``).
_public_fields: dict[str, float] = {}

_responses: TTLCache[bytes, bytes] = TTLCache(seconds=0.0, max_entries=1000)
# Request body -> the answer of the identical request being built now (None: not keepable).
_in_flight: dict[bytes, asyncio.Future[bytes | None]] = {}


def register(field: str, max_age_seconds: float) -> None:
    """``field`` at the root of a query is public for anonymous callers for that long."""
    _public_fields[field] = max_age_seconds


def max_age(root_fields: list[str]) -> float:
    """How long a response made of these root fields may be reused (0: not at all).
    ``__typename`` never changes and neither allows nor forbids it."""
    ages = [_public_fields.get(name, 0.0) for name in root_fields if name != "__typename"]
    return min(ages) if ages else 0.0


def get(body: bytes) -> bytes | None:
    return _responses.get(body) if len(body) <= MAX_KEY_BYTES else None


def put(body: bytes, response: bytes, seconds: float) -> None:
    if seconds > 0 and len(body) <= MAX_KEY_BYTES:
        _responses.put(body, response, seconds=seconds)


def forget() -> None:
    _responses.clear()


async def wait_for(body: bytes) -> bytes | None:
    """The answer of an identical request already being built, once it is ready and if it
    may be reused; None at once when there is no such request."""
    pending = _in_flight.get(body)
    return None if pending is None else await asyncio.shield(pending)


class Leader:
    """The request that builds the answer others wait for; ``share`` it when it is keepable."""

    def __init__(self) -> None:
        self.answer: bytes | None = None

    def share(self, response: bytes) -> None:
        self.answer = response


@contextmanager
def leading(body: bytes) -> Iterator[Leader]:
    leader = Leader()
    if body in _in_flight or len(body) > MAX_KEY_BYTES:  # another one leads, or never kept
        yield leader
        return
    pending: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    _in_flight[body] = pending
    try:
        yield leader
    finally:
        del _in_flight[body]
        pending.set_result(leader.answer)  # followers get None when it failed or is not kept
