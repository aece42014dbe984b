"""Identity: member and admin JWTs (HS256) and hashed API keys with scopes.

A request resolves to one ``Principal``. Tokens are checked strictly: only HS256 is accepted
(so ``alg: none`` and algorithm-confusion tokens are refused), ``exp`` is required, and a
wrong signature or an expired token is refused with ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.cache import TTLCache
from server.models import ApiKey
from server.settings import Settings

ALGORITHM = "HS256"
API_KEY_PREFIX = "ql_"
API_KEY_SCOPES = ("admin", "events")


class Role(StrEnum):
    ANONYMOUS = "anonymous"
    MEMBER = "member"
    ADMIN = "admin"
    EVENTS = "events"  # a back-end key that reports events and registers/reads members


@dataclass(frozen=True)
class Principal:
    role: Role
    external_id: str | None = None  # the member's externalId, for member tokens
    key_name: str | None = None  # the API key's name, for API keys

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_member(self) -> bool:
        return self.role is Role.MEMBER

    @property
    def subject(self) -> str:
        """A stable name for rate limits, logs and idempotency scopes."""
        if self.role is Role.MEMBER:
            return f"member:{self.external_id}"
        if self.key_name:
            return f"key:{self.key_name}"
        return self.role.value


ANONYMOUS = Principal(Role.ANONYMOUS)


class AuthError(Exception):
    """The credentials were present but not acceptable."""


def issue_token(
    settings: Settings, *, subject: str | None, role: str, ttl_seconds: int = 3600
) -> str:
    """Sign a JWT; ``role`` is ``member`` (``subject`` = externalId) or ``admin``."""
    if role not in ("member", "admin"):
        raise ValueError("role must be 'member' or 'admin'")
    if role == "member" and not subject:
        raise ValueError("a member token needs the member's externalId as subject")
    now = int(time.time())
    claims: dict[str, object] = {"role": role, "iat": now, "exp": now + ttl_seconds}
    if subject:
        claims["sub"] = subject
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


# Verified tokens, each kept until its own ``exp``. A member's client sends the same token with
# every request until it expires; checking its signature again each time costs more CPU than a
# whole cached GraphQL query. A token is immutable and the cache is keyed by the secret too, so
# a hit is exactly what verifying would return.
_verified: TTLCache[tuple[str, str], Principal] = TTLCache(seconds=0.0, max_entries=100_000)


def decode_token(settings: Settings, token: str) -> Principal:
    key = (settings.jwt_secret, token)
    hit = _verified.get(key)
    if hit is not None:
        return hit
    principal, expires = _verify(settings, token)
    return _verified.put(key, principal, seconds=expires - time.time())


def _verify(settings: Settings, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    expires = float(claims["exp"])
    role = claims.get("role", "member")
    if role == "admin":
        return Principal(Role.ADMIN, key_name=f"jwt:{claims.get('sub', 'admin')}"), expires
    if role != "member":
        raise AuthError(f"unknown role {role!r}")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("a member token needs `sub` (the member's externalId)")
    return Principal(Role.MEMBER, external_id=subject), expires


def hash_api_key(key: str) -> str:
    # API keys are 256-bit random secrets: a plain SHA-256 is enough (no dictionary to guess).
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(session: AsyncSession, *, name: str, scope: str) -> str:
    """Create an API key and return the secret; only its hash is stored."""
    if scope not in API_KEY_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(API_KEY_SCOPES)}")
    if not name.strip():
        raise ValueError("name must not be empty")
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name.strip(), scope=scope, prefix=secret[:10], key_hash=hash_api_key(secret))
    session.add(key)
    await session.flush()
    return secret


# Resolved API keys, cached briefly so a busy back-end does not cost a query per request.
# A revoked key stops working within 30 seconds in every API process.
_api_key_cache: TTLCache[str, Principal] = TTLCache(seconds=30.0)


async def principal_for_api_key(session: AsyncSession, key: str) -> Principal:
    key_hash = hash_api_key(key)
    cached = _api_key_cache.get(key_hash)
    if cached is not None:
        return cached
    row = (
        await session.execute(
            select(ApiKey.name, ApiKey.scope).where(
                ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise AuthError("unknown or revoked API key")
    role = Role.ADMIN if row.scope == "admin" else Role.EVENTS
    return _api_key_cache.put(key_hash, Principal(role, key_name=row.name))


async def authenticate(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    authorization: str | None,
) -> Principal:
    """Resolve an ``Authorization`` header value (``Bearer <jwt or api key>``)."""
    if not authorization:
        return ANONYMOUS
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthError("use `Authorization: Bearer <token>`")
    if credential.startswith(API_KEY_PREFIX):
        async with session_factory() as session:
            return await principal_for_api_key(session, credential)
    return decode_token(settings, credential)
