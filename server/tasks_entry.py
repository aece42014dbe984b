"""What a Dramatiq worker loads: the broker, then every domain's ``tasks`` module.

``questline worker`` runs ``dramatiq server.tasks_entry``. A domain with actors lists its
module in ``TASK_MODULES``; modules that do not exist yet are skipped, but a module that exists
and fails to import fails the worker loudly (no silently missing actors).
"""

from __future__ import annotations

import importlib
import importlib.util

from server.broker import broker, require_broker

TASK_MODULES = (
    "server.tasks",
    "ledger.tasks",
    "members.tasks",
    "quests.tasks",
    "campaigns.tasks",
    "badges.tasks",
    "redemptions.tasks",
    "referrals.tasks",
    "leaderboards.tasks",
    "webhooks.tasks",
)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package itself is missing
        return False


def load_task_modules() -> list[str]:
    """Import every existing task module; return the names imported."""
    loaded = []
    for name in TASK_MODULES:
        if _module_exists(name):
            importlib.import_module(name)
            loaded.append(name)
    return loaded


require_broker()  # a worker without a broker URL stops here, saying what to set
LOADED_MODULES = load_task_modules()

__all__ = ["LOADED_MODULES", "TASK_MODULES", "broker", "load_task_modules", "require_broker"]
