"""Redis key and channel names of the leaderboards (one place, so nothing else builds them).

``QUESTLINE_LEADERBOARD_PREFIX`` (default ``ql:lb:``) starts every name, so a benchmark or a
second deployment can share a Redis without touching anyone else's keys.

* ``<prefix>{<board>:v<version>:<period id>}`` — a sorted set: member id → encoded score
  (see ``encoding.py``). The braces are a Redis Cluster hash tag, so a key and its helper
  keys below live in the same slot.
* ``...}:tmp`` — the key being rebuilt; ``...}:rebuilding`` — set while a rebuild runs, and
  ``...}:journal`` — the live updates that arrived meanwhile (see ``rebuild.py``).
* ``<prefix>meta:built`` — set by a complete rebuild; when Redis lost its data (a restart
  without persistence, a failover) it is missing and the maintenance job rebuilds.
* Pub/sub channels: ``<prefix>live:db<n>:member:<member id>`` and
  ``<prefix>live:db<n>:board:<board>`` (``n``: the Redis database; channels span databases).
"""

from __future__ import annotations

import functools
import os

from redis.asyncio import Redis

DEFAULT_PREFIX = "ql:lb:"


@functools.cache
def prefix() -> str:
    """Read once per process (set the variable before the first use)."""
    return os.environ.get("QUESTLINE_LEADERBOARD_PREFIX") or DEFAULT_PREFIX


def board_key(board_key: str, version: int, period_id: str) -> str:
    return f"{prefix()}{{{board_key}:v{version}:{period_id}}}"


def tmp_key(key: str) -> str:
    return f"{key}:tmp"


def rebuilding_key(key: str) -> str:
    return f"{key}:rebuilding"


def journal_key(key: str) -> str:
    return f"{key}:journal"


def built_key() -> str:
    return f"{prefix()}meta:built"


def _database(redis: Redis) -> int:
    return int(redis.connection_pool.connection_kwargs.get("db", 0) or 0)


def member_channel(redis: Redis, member_id: int) -> str:
    """Pub/sub channels are server-wide, not per database: the name carries the database
    number, so deployments (or test runs) on other databases of one Redis never cross."""
    return f"{prefix()}live:db{_database(redis)}:member:{member_id}"


def board_channel(redis: Redis, board_key: str) -> str:
    return f"{prefix()}live:db{_database(redis)}:board:{board_key}"


def all_keys_pattern() -> str:
    return f"{prefix()}*"
