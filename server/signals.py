"""In-process notifications of what a transaction did, delivered only after it commits.

Domains ``emit`` facts inside a transaction (``points.credited``, ``event.recorded``, ...);
other domains ``subscribe`` to them (leaderboards, live subscriptions, webhooks). Delivery
happens after the commit, so a subscriber never sees something that was rolled back, and a
failing subscriber never undoes the data. Each handler receives the whole batch of one topic
from one transaction, so it can do one round trip (a Redis pipeline) for all of them.

Delivery is best effort in this process: anything a subscriber keeps must be rebuildable from
PostgreSQL (leaderboards are), and durable side effects go through Dramatiq jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger("questline.signals")


@dataclass(frozen=True)
class Signal:
    topic: str
    payload: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[list[Signal]], Awaitable[None]]
_handlers: dict[str, list[Handler]] = defaultdict(list)


def subscribe(topic: str, handler: Handler) -> None:
    if handler not in _handlers[topic]:
        _handlers[topic].append(handler)


def unsubscribe(topic: str, handler: Handler) -> None:
    if handler in _handlers.get(topic, []):
        _handlers[topic].remove(handler)


def emit(session: AsyncSession, topic: str, **payload: Any) -> None:
    """Queue a signal; it is delivered once the session's transaction commits."""
    pending: list[Signal] = session.info.setdefault("signals", [])
    pending.append(Signal(topic, payload))


def take(session: AsyncSession) -> list[Signal]:
    return list(session.info.pop("signals", []))


async def deliver(signals: list[Signal]) -> None:
    by_topic: dict[str, list[Signal]] = defaultdict(list)
    for signal in signals:
        by_topic[signal.topic].append(signal)
    for topic, batch in by_topic.items():
        for handler in _handlers.get(topic, []):
            try:
                await handler(batch)
            except Exception:  # committed data stays; the subscriber can be rebuilt
                log.exception("signal handler failed", topic=topic)
