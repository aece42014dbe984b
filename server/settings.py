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
    db_pool_size: int = 20
    db_max_overflow: int = 10
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
