"""Domain errors: expected failures a client can act on, each with an API error code.

Domain services raise ``DomainError`` (or a subclass); the GraphQL layer turns it into a
``UserError`` in the mutation payload and rolls the transaction back, so a failure never
leaves a partial write behind.
"""

from __future__ import annotations

from enum import StrEnum

import asyncpg
from sqlalchemy.exc import DBAPIError


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    LIMIT_REACHED = "LIMIT_REACHED"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"
    ALREADY_DONE = "ALREADY_DONE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    CONFLICT = "CONFLICT"


class DomainError(Exception):
    def __init__(self, code: ErrorCode | str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"DomainError({self.code.value}, {self.message!r}, field={self.field!r})"


def invalid(message: str, field: str | None = None) -> DomainError:
    return DomainError(ErrorCode.INVALID_INPUT, message, field)


def not_found(message: str, field: str | None = None) -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, message, field)


UNIQUE_VIOLATION = "23505"


def violates_unique(error: BaseException, constraint: str) -> bool:
    """Whether ``error`` is PostgreSQL refusing a row that ``constraint`` (a unique index)
    already holds: a concurrent request committed the same key first."""
    return (
        getattr(error, "sqlstate", None) == UNIQUE_VIOLATION
        and getattr(error, "constraint_name", None) == constraint
    )


# A lost or refused database connection: the server is down, restarting or shutting down.
_UNAVAILABLE = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, timeouts, ...
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 starting up
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
)


def is_unavailable(error: BaseException) -> bool:
    """Whether the failure is the database being unreachable (not a bug in the request):
    looks through SQLAlchemy's wrapping and the exception chain."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _UNAVAILABLE):
            return True
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return False
