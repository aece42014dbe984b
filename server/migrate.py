"""Run Alembic migrations programmatically (CLI and tests share this)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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


def earlier_revision(filename: str) -> ModuleType:
    """An earlier migration module, for its SQL: a migration that replaces a function puts
    the earlier definition back on downgrade (their file names start with digits, so they
    cannot be imported by name)."""
    path = ROOT / "migrations" / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"questline_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
