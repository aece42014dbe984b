"""Small per-process TTL caches for hot, rarely-changing reads (tiers, program settings,
API keys). Each process keeps its own copy; a change made elsewhere is seen within the TTL.
``clear_all()`` empties every cache (tests, after truncating tables). ``PerClient`` keeps
one object per Redis client (a rate limiter, a publisher), for as long as the client lives."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_caches: list[TTLCache[object, object]] = []


class TTLCache(Generic[K, V]):
    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        _caches.append(self)  # type: ignore[arg-type]

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, key: K, value: V, seconds: float | None = None) -> V:
        """Keep ``value`` for the cache's TTL, or for ``seconds`` when given (an entry that
        knows its own lifetime, such as a token until its expiry)."""
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        lifetime = self.seconds if seconds is None else seconds
        self._entries[key] = (time.monotonic() + lifetime, value)
        return value

    def clear(self) -> None:
        self._entries.clear()


def clear_all() -> None:
    for cache in _caches:
        cache.clear()


class PerClient(Generic[K, V]):
    """One ``V`` per client object (a Redis client: so per Runtime and event loop), made by
    ``make`` on first use and dropped with the client."""

    def __init__(self, make: Callable[[K], V]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[K, V] = weakref.WeakKeyDictionary()

    def __call__(self, client: K) -> V:
        found = self._made.get(client)
        if found is None:
            found = self._made[client] = self._make(client)
        return found
