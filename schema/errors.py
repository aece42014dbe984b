"""Error conventions of the API.

* Expected domain failures come back in the payload as ``errors: [UserError!]!``.
* Authentication, authorization and query-limit failures are GraphQL errors carrying
  ``extensions.code`` (``ClientError``).
* Anything else is masked ("Unexpected error.") and logged with its traceback, so no stack
  trace or internal message ever reaches a client.
"""

from __future__ import annotations

import asyncpg
import strawberry
import structlog
from graphql import GraphQLError
from sqlalchemy.exc import DBAPIError

from server.errors import DomainError

log = structlog.get_logger("questline.graphql")


@strawberry.type(description="An expected failure the client can act on.")
class UserError:
    code: str
    message: str
    field: str | None = None

    @classmethod
    def from_domain(cls, error: DomainError) -> UserError:
        return cls(code=error.code.value, message=error.message, field=error.field)


class ClientError(GraphQLError):
    """A GraphQL error meant for the client, with ``extensions.code``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


def unauthenticated(message: str = "authentication required") -> ClientError:
    return ClientError(message, "UNAUTHENTICATED")


def forbidden(message: str = "not allowed for this caller") -> ClientError:
    return ClientError(message, "FORBIDDEN")


def bad_request(message: str) -> ClientError:
    return ClientError(message, "INVALID_INPUT")


def should_mask_error(error: GraphQLError) -> bool:
    """Mask everything that is not a deliberate client-facing error, and log it."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    if isinstance(original, DomainError):  # a domain failure raised from a query resolver
        error.extensions = {**(error.extensions or {}), "code": original.code.value}
        error.message = original.message
        return False
    if is_unavailable(original):  # the database is down or restarting: a client can retry
        log.warning("database unavailable", path=error.path, error=str(original)[:200])
        error.extensions = {**(error.extensions or {}), "code": "UNAVAILABLE"}
        error.message = "the service is temporarily unavailable; retry shortly"
        return False
    log.error("unexpected error in resolver", path=error.path, exc_info=original)
    return True


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
