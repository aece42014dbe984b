"""Process settings, read from ``QUESTLINE_*`` environment variables (and a ``.env`` file).

Program rules that admins change at run time (welcome points, expiry, ...) are *not* here:
they live in the database (see ``members.program``). These are the deployment knobs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "questline-development-secret-change-me-in-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUESTLINE_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None, description="postgresql+asyncpg://... ; unset starts the embedded server"
    )
    redis_url: str | None = Field(default=None, description="redis://... ; unset: embedded Redis")
    broker_url: str | None = Field(
        default=None, description="redis:// or amqp:// for Dramatiq; defaults to the Redis URL"
    )
    jwt_secret: str = DEV_JWT_SECRET
    timezone: str = "UTC"
    data_dir: Path = Path(".questline")
    log_level: str = "INFO"
    log_json: bool = False
    # One line per HTTP request from uvicorn. Off by default: the API already logs every
    # failed (5xx) or slow (> 1 s) request with its request id, and counts all of them in
    # /metrics; a line per request costs ~10% of the API's CPU at a few thousand requests/s.
    access_log: bool = False
    db_pool_size: int = 20
    db_max_overflow: int = 10
    # asyncpg connections per process: hot request reads and one-statement mutations
    db_read_pool_size: int = 10
    # The largest request body accepted (413 PAYLOAD_TOO_LARGE beyond it).
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Anonymous reads of public fields (leaderboards) are answered from the last identical
    # response for a fraction of a second; see server.public_cache.
    public_response_cache: bool = True
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_query_cost: int = Field(
        default=5000,
        description="Query cost limit: each field costs 1, a paginated field multiplies its "
        "subtree by `first` (see schema.cost)",
    )

    # Requests per minute per caller (0: unlimited); see server.ratelimit.
    rate_limit_enabled: bool = True
    rate_limit_anonymous_per_minute: int = 300  # per client IP
    rate_limit_member_per_minute: int = 600  # per member token
    rate_limit_events_per_minute: int = 60_000  # per events API key (back-ends batch)
    rate_limit_admin_per_minute: int = 6_000  # per admin token or key

    # Outbound webhooks; see webhooks.delivery.
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 10
    webhook_backoff_seconds: float = 30.0  # first retry; doubles per attempt, with jitter
    webhook_backoff_max_seconds: float = 6 * 3600.0
    webhook_expiring_days: int = 7  # points.expiring is announced this many days ahead
    webhook_retention_days: int = 30  # finished deliveries and their events are kept so long
    # Deliveries to private, loopback and link-local addresses (see webhooks.addresses):
    # refused unless this is true (development and tests, whose receivers run locally).
    webhook_allow_private_addresses: bool = False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
