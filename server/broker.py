"""The Dramatiq broker, configured from settings when this module is imported.

Import this module (directly or through a domain's ``tasks.py``) before declaring any actor:
importing it builds the broker and makes it Dramatiq's global broker, so ``@dramatiq.actor``
anywhere afterwards declares against it.

- ``QUESTLINE_BROKER_URL`` picks the broker: ``redis://``, ``rediss://`` or ``unix://`` gives a
  Redis broker, ``amqp://`` / ``amqps://`` a RabbitMQ one. Unset, it falls back to
  ``QUESTLINE_REDIS_URL``. The ``questline`` commands resolve the embedded Redis first and
  export its URL, so their processes and children always find one.
- With no URL at all, importing still works (tools such as the schema exporter import domain
  modules) but the broker is a placeholder: sending a message or starting a worker fails with
  ``BrokerNotConfigured`` and a message saying what to set.

Actor conventions:

- Names are ``domain.verb`` (``ledger.settle_expirations``, ``members.mark_inactive``):
  declare them with :func:`actor` (which checks the name) or with
  ``@dramatiq.actor(actor_name="domain.verb")``. The name is the wire contract: the scheduler
  sends periodic jobs by name, so renaming an actor is a breaking change.
- Actors may be ``async def`` (the AsyncIO middleware runs them on one event loop per worker
  process). Get the database and Redis with ``runtime = await worker_runtime()`` and open
  ``runtime.transaction()``; an actor owns its transaction.
- Jobs are enqueued only once the data they refer to is committed: inside a transaction use
  :func:`send_after_commit`; elsewhere in async code ``await send(actor, ...)``, which does the
  (blocking) broker I/O in a thread so the event loop never waits on it.
- Tests call an async actor's coroutine directly with ``await run_actor(actor, ...)``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, Middleware
from sqlalchemy.ext.asyncio import AsyncSession

from server.runtime import Runtime, after_commit
from server.settings import Settings, get_settings

ACTOR_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
AMQP_SCHEMES = ("amqp://", "amqps://")

P = ParamSpec("P")
R = TypeVar("R")


class BrokerNotConfigured(RuntimeError):
    """No broker URL was configured for this process."""

    def __init__(self) -> None:
        super().__init__(
            "No Dramatiq broker configured: set QUESTLINE_BROKER_URL (redis://, unix:// or "
            "amqp://) or QUESTLINE_REDIS_URL, or start the process with the `questline` command "
            "(`questline worker`, `questline dev`), which falls back to the embedded Redis."
        )


class UnconfiguredBroker(StubBroker):
    """Stands in for the broker when no URL is set: actors can be declared, nothing sent."""

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        raise BrokerNotConfigured()


def broker_url(settings: Settings) -> str | None:
    return settings.broker_url or settings.redis_url


def build_broker(url: str | None) -> dramatiq.Broker:
    """A broker for ``url`` with the AsyncIO middleware (``None`` gives the placeholder)."""
    broker: dramatiq.Broker
    if url is None:
        broker = UnconfiguredBroker()
    elif url.startswith(REDIS_SCHEMES):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
    elif url.startswith(AMQP_SCHEMES):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # Publisher confirms: `send` returns only once RabbitMQ has taken the message.
        broker = RabbitmqBroker(url=url, confirm_delivery=True)
    else:
        raise ValueError(
            f"unsupported broker URL {url!r}: use redis://, rediss://, unix:// or amqp://"
        )
    broker.add_middleware(AsyncIO())
    broker.add_middleware(WorkerRuntimeCleanup())
    return broker


def require_broker() -> dramatiq.Broker:
    """The global broker, or ``BrokerNotConfigured`` if no URL was set (worker, scheduler)."""
    current = dramatiq.get_broker()
    if isinstance(current, UnconfiguredBroker):
        raise BrokerNotConfigured()
    return current


# ---- per-process resources for actors -------------------------------------------------------

_runtime: Runtime | None = None
_runtime_loop: asyncio.AbstractEventLoop | None = None


async def worker_runtime() -> Runtime:
    """The process's Runtime (engine, sessions, Redis), created on first use.

    Connections belong to an event loop, so the cached Runtime is tied to the loop that made
    it; called from another loop (a test's, say) it builds a new one for that loop.
    """
    global _runtime, _runtime_loop
    loop = asyncio.get_running_loop()
    if _runtime is not None and _runtime_loop is loop:
        return _runtime
    runtime = await Runtime.start(get_settings())
    if _runtime is not None and _runtime_loop is loop:  # another task won the race meanwhile
        await runtime.close()
        return _runtime
    _runtime, _runtime_loop = runtime, loop
    return runtime


async def close_worker_runtime() -> None:
    """Close the cached Runtime if it belongs to the running loop (worker shutdown, tests)."""
    global _runtime, _runtime_loop
    runtime, loop = _runtime, _runtime_loop
    if runtime is None or loop is not asyncio.get_running_loop():
        return
    _runtime = _runtime_loop = None
    await runtime.close()


class WorkerRuntimeCleanup(Middleware):
    """Closes the worker's Runtime on its own event loop before the worker stops."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None and _runtime is not None and _runtime_loop is thread.loop:
            thread.run_coroutine(close_worker_runtime())


# ---- declaring and sending ------------------------------------------------------------------


def actor(
    name: str, *, queue_name: str = "default", **options: Any
) -> Callable[[Callable[P, R]], dramatiq.Actor[P, R]]:
    """``@dramatiq.actor`` with a checked ``domain.verb`` name (options as Dramatiq's)."""
    if not ACTOR_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"actor names are `domain.verb` in snake_case, got {name!r}")

    def decorate(fn: Callable[P, R]) -> dramatiq.Actor[P, R]:
        declare = dramatiq.actor(actor_name=name, queue_name=queue_name, **options)
        return cast(dramatiq.Actor[P, R], declare(fn))

    return decorate


async def enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> None:
    """Put a built message on its queue without blocking the event loop."""
    current = dramatiq.get_broker()
    await asyncio.to_thread(current.enqueue, message, delay=delay)


async def send(actor: dramatiq.Actor[Any, Any], *args: Any, **kwargs: Any) -> None:
    """``actor.send(*args, **kwargs)`` from async code, off the event loop."""
    await enqueue(actor.message(*args, **kwargs))


def send_after_commit(
    session: AsyncSession, message: dramatiq.Message[Any], *, delay: int | None = None
) -> None:
    """Enqueue ``message`` once the session's transaction commits; drop it on rollback.

    Build the message with ``some_actor.message(...)``. The session must come from
    ``Runtime.transaction()``.
    """

    async def _enqueue() -> None:
        await enqueue(message, delay=delay)

    after_commit(session, _enqueue)


async def run_actor(actor: dramatiq.Actor[Any, R], *args: Any, **kwargs: Any) -> Any:
    """Run an actor's own function in the current event loop (tests, one-off commands).

    Dramatiq wraps ``async def`` actors so that worker threads can call them synchronously;
    this unwraps them again. Plain actors run in a thread.
    """
    fn = actor.fn
    original = getattr(fn, "__wrapped__", None)
    if original is not None and asyncio.iscoroutinefunction(original):
        return await cast(Callable[..., Awaitable[Any]], original)(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


broker = build_broker(broker_url(get_settings()))
dramatiq.set_broker(broker)
