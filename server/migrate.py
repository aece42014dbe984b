"""Run Alembic migrations programmatically (CLI and tests share this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade_head(database_url: str) -> None:
    # "heads": domains may add migrations on parallel branches until a merge revision joins
    # them; with a single head this is the same as "head".
    command.upgrade(alembic_config(database_url), "heads")
