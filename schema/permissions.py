"""Permission classes reused by every domain module (see API.md, Identity)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from schema.errors import forbidden, unauthenticated
from server.auth import Principal, Role


def principal_of(info: Info) -> Principal:
    principal: Principal = info.context.principal
    return principal


def _require(info: Info, *roles: Role) -> Principal:
    principal = principal_of(info)
    if principal.role is Role.ANONYMOUS:
        raise unauthenticated()
    if principal.role not in roles:
        raise forbidden()
    return principal


class IsAdmin(BasePermission):
    message = "admin only"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        _require(info, Role.ADMIN)
        return True


class IsAdminOrEvents(BasePermission):
    """Admins and back-ends holding an ``events`` API key."""

    message = "admin or events key only"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        _require(info, Role.ADMIN, Role.EVENTS)
        return True


class IsMember(BasePermission):
    message = "member token only"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        _require(info, Role.MEMBER)
        return True


class IsAuthenticated(BasePermission):
    message = "authentication required"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        _require(info, Role.MEMBER, Role.ADMIN, Role.EVENTS)
        return True


def require_member_external_id(info: Info) -> str:
    """The caller's own externalId; only member tokens have one."""
    principal = _require(info, Role.MEMBER)
    assert principal.external_id is not None
    return principal.external_id


def require_access_to_member(info: Info, external_id: str) -> Principal:
    """Admins and events keys may act on any member; a member only on itself."""
    principal = _require(info, Role.MEMBER, Role.ADMIN, Role.EVENTS)
    if principal.role is Role.MEMBER and principal.external_id != external_id:
        raise forbidden("a member token can only act on its own member")
    return principal
