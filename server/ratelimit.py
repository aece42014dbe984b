"""Per-caller rate limits, kept in Redis, checked before GraphQL runs.

Who is counted: a member token per member, an API key or admin token per key, anonymous
callers (and failed credentials) per client address. Limits are requests per minute per role
(``QUESTLINE_RATE_LIMIT_*_PER_MINUTE``; 0 means unlimited; ``QUESTLINE_RATE_LIMIT_ENABLED``
switches them all off). Behind a proxy, run uvicorn with ``--proxy-headers`` (and
``--forwarded-allow-ips``) so the client address is the caller's, not the proxy's.

The algorithm is GCRA (the "generic cell rate algorithm", a leaky bucket kept as one
timestamp per caller): a caller may burst up to the whole minute's allowance, then gets one
request per ``60 / limit`` seconds. It is exact across any number of API processes, costs one
Redis round trip (a Lua script, with Redis's own clock so API hosts' clocks do not matter), and
tells a refused caller exactly when to retry. Over the limit: HTTP 429, a ``Retry-After``
header, and a GraphQL-shaped body with ``extensions.code = RATE_LIMITED`` and ``retryAfter``.

Redis down or slow means *fail open*: the request goes through, a warning is logged, and the
limiter leaves Redis alone for a few seconds (so an outage costs no time per request). The API
keeps working without Redis; only the limits are off meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Send

from server.auth import Principal, Role
from server.cache import PerClient
from server.settings import Settings

log = structlog.get_logger("questline.ratelimit")

PERIOD_MS = 60_000
KEY_PREFIX = "ratelimit:"
REDIS_TIMEOUT_SECONDS = 0.5
BREAKER_SECONDS = 5.0

# KEYS[1]: the caller's key. ARGV[1]: ms between requests at the sustained rate;
# ARGV[2]: the period in ms (the burst tolerance is period - interval).
# Returns {1, remaining} when allowed, {0, retry_after_ms} when not.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local debt = tat + interval - now
if debt > period then
  return {0, debt - period}
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(debt))
return {1, math.floor((period - debt) / interval)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds, at least 1 when refused


def limit_for(settings: Settings, principal: Principal) -> int:
    """Requests per minute for this caller (0: unlimited)."""
    if not settings.rate_limit_enabled:
        return 0
    return {
        Role.ANONYMOUS: settings.rate_limit_anonymous_per_minute,
        Role.MEMBER: settings.rate_limit_member_per_minute,
        Role.EVENTS: settings.rate_limit_events_per_minute,
        Role.ADMIN: settings.rate_limit_admin_per_minute,
    }[principal.role]


def caller_key(principal: Principal, client_address: str) -> str:
    if principal.role is Role.ANONYMOUS:
        return f"{KEY_PREFIX}ip:{client_address}"
    return f"{KEY_PREFIX}{principal.role.value}:{principal.subject}"


class RateLimiter:
    """The Redis side: one script call per request, failing open."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        breaker_seconds: float = BREAKER_SECONDS,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.breaker_seconds = breaker_seconds
        self._script = client.register_script(GCRA_SCRIPT)
        self._skip_until = 0.0  # the breaker: no Redis calls before this (monotonic) time

    async def hit(self, key: str, limit: int) -> Decision | None:
        """Count one request against ``limit`` per minute; None when Redis could not say."""
        if limit <= 0 or time.monotonic() < self._skip_until:
            return None
        interval = PERIOD_MS / limit
        try:
            async with asyncio.timeout(self.timeout):
                allowed, value = await self._script(keys=[key], args=[interval, PERIOD_MS])
        except Exception as exc:  # Redis down, slow or refusing: fail open
            self._skip_until = time.monotonic() + self.breaker_seconds
            log.warning(
                "rate limiter unavailable; requests are not limited for now",
                error=f"{type(exc).__name__}: {exc}",
                retry_in_seconds=self.breaker_seconds,
            )
            return None
        if int(allowed) == 1:
            return Decision(True, limit, int(value), 0)
        return Decision(False, limit, 0, max(1, math.ceil(float(value) / 1000)))


# One limiter per Redis client (that is, per Runtime), made on first use.
limiter_for: PerClient[aioredis.Redis, RateLimiter] = PerClient(RateLimiter)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def check(
    request: Request, settings: Settings, client: aioredis.Redis, principal: Principal
) -> Decision | None:
    """Count this request for its caller; None when it is not limited (or Redis is out)."""
    limit = limit_for(settings, principal)
    if limit <= 0:
        return None
    key = caller_key(principal, client_address(request))
    return await limiter_for(client).hit(key, limit)


def refusal(decision: Decision) -> Response:
    message = (
        f"Rate limit exceeded: at most {decision.limit} requests per minute for this caller. "
        f"Retry in {decision.retry_after} s."
    )
    return JSONResponse(
        {
            "errors": [
                {
                    "message": message,
                    "extensions": {"code": "RATE_LIMITED", "retryAfter": decision.retry_after},
                }
            ]
        },
        status_code=429,
        headers={"Retry-After": str(decision.retry_after), **_headers(decision)},
    )


def _headers(decision: Decision) -> dict[str, str]:
    return {"RateLimit-Limit": str(decision.limit), "RateLimit-Remaining": str(decision.remaining)}


def with_headers(send: Send, decision: Decision | None) -> Send:
    """``send`` that adds ``RateLimit-Limit`` / ``RateLimit-Remaining`` to the response."""
    if decision is None:
        return send
    extra = [(k.lower().encode(), v.encode()) for k, v in _headers(decision).items()]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers
