"""In-process notifications of what a transaction did, delivered only after it commits.

Domains ``emit`` facts inside a transaction (``points.credited``, ``event.recorded``, ...);
other domains ``subscribe`` to them (leaderboards, live subscriptions, webhooks). Delivery
happens after the commit, so a subscriber never sees something that was rolled back, and a
failing subscriber never undoes the data. Each handler receives the whole batch of one topic
from one transaction, so it can do one round trip (a Redis pipeline) for all of them.

Delivery is best effort in this process: anything a subscriber keeps must be rebuildable from
PostgreSQL (leaderboards are), and durable side effects go through Dramatiq jobs.

The durable path: a consumer that must never miss a fact (webhooks) registers a writer with
``persist``. Writers run *inside* the emitting transaction, right before it commits (a
SQLAlchemy ``before_commit`` session event), with the synchronous ``Session`` under the
``AsyncSession`` (SQL runs there through SQLAlchemy's greenlet bridge). What they write commits
or rolls back with the facts themselves, and an error in a writer fails the commit. Signals
emitted inside a savepoint that is rolled back are dropped, for both paths.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = structlog.get_logger("questline.signals")


@dataclass(frozen=True)
class Signal:
    topic: str
    payload: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    """Where signals are queued: an ``AsyncSession``/``Session`` (delivered after its commit)
    or ``server.rawsql.Autocommit`` (delivered after its one writing statement)."""

    @property
    def info(self) -> dict[Any, Any]: ...


Handler = Callable[[list[Signal]], Awaitable[None]]
_handlers: dict[str, list[Handler]] = defaultdict(list)

# Runs inside the transaction, before the commit: (sync session, signals of its topics in the
# order they were emitted).
DurableWriter = Callable[[Session, list[Signal]], None]
# Which of its topics a durable writer would write for right now, asked with a plain asyncpg
# connection (webhooks: the topics some active endpoint subscribes to).
Interest = Callable[[Any], Awaitable[frozenset[str]]]
_writers: list[tuple[frozenset[str], DurableWriter, Interest | None]] = []

_PENDING = "signals"
_PERSISTED = "signals_persisted"  # how many of the pending signals the writers have seen
_SAVEPOINTS = "signals_savepoints"  # savepoint -> number of signals emitted before it began


def subscribe(topic: str, handler: Handler) -> None:
    if handler not in _handlers[topic]:
        _handlers[topic].append(handler)


def unsubscribe(topic: str, handler: Handler) -> None:
    if handler in _handlers.get(topic, []):
        _handlers[topic].remove(handler)


def persist(topics: Iterable[str], writer: DurableWriter, interest: Interest | None = None) -> None:
    """Run ``writer`` in every transaction that emitted one of ``topics``, right before it
    commits, with those signals (see the module docstring). ``interest`` tells which topics
    it wants at the moment (all of them when None), see :func:`durable_topics`."""
    if all(entry[1] is not writer for entry in _writers):
        _writers.append((frozenset(topics), writer, interest))


def stop_persisting(writer: DurableWriter) -> None:
    _writers[:] = [entry for entry in _writers if entry[1] is not writer]


async def durable_topics(connection: Any) -> frozenset[str]:
    """The topics some durable writer wants written at the moment. Work that emits one of
    them must run in a transaction (``Runtime.transaction``), where the writers run before
    the commit; work that emits none may run as one autocommit statement
    (``Runtime.autocommit``)."""
    wanted: set[str] = set()
    for topics, _, interest in list(_writers):
        wanted |= topics if interest is None else topics & await interest(connection)
    return frozenset(wanted)


def emit(session: Target, topic: str, **payload: Any) -> None:
    """Queue a signal; it is delivered once the session's transaction commits."""
    pending: list[Signal] = session.info.setdefault(_PENDING, [])
    pending.append(Signal(topic, payload))


def take(session: Target) -> list[Signal]:
    session.info.pop(_PERSISTED, None)
    session.info.pop(_SAVEPOINTS, None)
    return list(session.info.pop(_PENDING, []))


# The Runtime whose transaction produced the signals being delivered: handlers that need
# the database or Redis use it (same engine, same event loop) rather than building their own.
_delivering: ContextVar[Any] = ContextVar("questline_signals_runtime", default=None)


def delivering_runtime() -> Any:
    """The Runtime delivering the current batch (None outside a delivery)."""
    return _delivering.get()


async def deliver(signals: list[Signal], runtime: Any = None) -> None:
    token = _delivering.set(runtime)
    try:
        await _deliver(signals)
    finally:
        _delivering.reset(token)


async def _deliver(signals: list[Signal]) -> None:
    by_topic: dict[str, list[Signal]] = defaultdict(list)
    for signal in signals:
        by_topic[signal.topic].append(signal)
    for topic, batch in by_topic.items():
        for handler in _handlers.get(topic, []):
            try:
                await handler(batch)
            except Exception:  # committed data stays; the subscriber can be rebuilt
                log.exception("signal handler failed", topic=topic)


# ---- the durable path and savepoints (SQLAlchemy session events) ----------------------------


@event.listens_for(Session, "before_commit")
def _run_durable_writers(session: Session) -> None:
    pending: list[Signal] | None = session.info.get(_PENDING)
    if not pending or not _writers:
        return
    seen = session.info.get(_PERSISTED, 0)
    fresh = pending[seen:]
    if not fresh:
        return
    for topics, writer, _ in list(_writers):
        batch = [signal for signal in fresh if signal.topic in topics]
        if batch:
            writer(session, batch)
    # only once every writer succeeded: a failed commit is rolled back, and a session that
    # goes on must not write these twice
    session.info[_PERSISTED] = len(pending)


@event.listens_for(Session, "after_transaction_create")
def _remember_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_SAVEPOINTS, {})
        marks[id(transaction)] = len(session.info.get(_PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_signals(session: Session, previous: SessionTransaction) -> None:
    """A rolled-back savepoint takes back the signals emitted inside it."""
    if not previous.nested:
        return
    mark = session.info.get(_SAVEPOINTS, {}).pop(id(previous), None)
    pending: list[Signal] | None = session.info.get(_PENDING)
    if mark is not None and pending is not None and len(pending) > mark:
        del pending[mark:]
