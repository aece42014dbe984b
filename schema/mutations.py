"""Running a mutation: one transaction (or one autocommit statement), domain failures returned
as payload errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from schema.errors import UserError
from server import signals
from server.errors import DomainError
from server.rawsql import Autocommit

PayloadT = TypeVar("PayloadT")


async def run_in_transaction(
    info: Info,
    work: Callable[[AsyncSession], Awaitable[PayloadT]],
    failed: Callable[[list[UserError]], PayloadT],
) -> PayloadT:
    """Run ``work`` in a transaction. A ``DomainError`` rolls everything back and becomes the
    payload ``failed([UserError])``, so a failure never leaves a partial write."""
    try:
        async with info.context.transaction() as session:
            return await work(session)
    except DomainError as error:
        return failed([UserError.from_domain(error)])


async def run_as_one_statement(
    info: Info,
    topics: frozenset[str],
    at_once: Callable[[Autocommit], Awaitable[PayloadT | None]],
    work: Callable[[AsyncSession], Awaitable[PayloadT]],
    failed: Callable[[list[UserError]], PayloadT],
) -> PayloadT:
    """Run ``at_once``, whose writes are ONE statement (its last), on a plain autocommit
    connection: no BEGIN, no COMMIT, no SQLAlchemy session (``Runtime.autocommit``). When it
    answers None (it wrote nothing: the work needs more than one statement this time), or a
    durable writer wants one of the ``topics`` it emits (a webhook subscribes to them), ``work``
    runs in a transaction instead, where such a writer runs before the commit."""
    context = info.context
    try:
        async with context.runtime.autocommit() as unit:
            if not topics & await signals.durable_topics(unit.connection):
                try:
                    done = await at_once(unit)
                finally:
                    context.forget_loaded()
                if done is not None:
                    return done
    except DomainError as error:
        return failed([UserError.from_domain(error)])
    return await run_in_transaction(info, work, failed)
