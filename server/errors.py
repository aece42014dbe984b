"""Domain errors: expected failures a client can act on, each with an API error code.

Domain services raise ``DomainError`` (or a subclass); the GraphQL layer turns it into a
``UserError`` in the mutation payload and rolls the transaction back, so a failure never
leaves a partial write behind.
"""

from __future__ import annotations

from enum import StrEnum


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
