"""Running a mutation: one transaction, domain failures returned as payload errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from schema.errors import UserError
from server.errors import DomainError

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
