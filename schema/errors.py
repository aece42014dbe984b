"""Error conventions of the API.

* Expected domain failures come back in the payload as ``errors: [UserError!]!``.
* Authentication, authorization and query-limit failures are GraphQL errors carrying
  ``extensions.code`` (``ClientError``).
* Anything else is masked ("Unexpected error.") and logged with its traceback, so no stack
  trace or internal message ever reaches a client.
"""

from __future__ import annotations

import strawberry
import structlog
from graphql import GraphQLError

from server.errors import DomainError, is_unavailable

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
